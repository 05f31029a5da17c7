"""A *trained* flow posterior on ``gaussian_linear`` passes the calibration diagnostics.

``test_calibration.py`` checks the diagnostics against the exact posterior and deliberately
mis-specified ones; this closes the loop with a model that learned the posterior from
simulations: its HPD calibration error over the held-out split lies within the Monte-Carlo floor
plus 0.01 (issue 6's first acceptance bullet), and copies of its draws with the widths halved
around each observation's mean, or shifted by one posterior sd, are flagged by coverage, SBC and
TARP alike.
"""

from __future__ import annotations

import numpy as np
import pytest

from sbi_core.calibration import run_calibration
from sbi_core.calibration.diagnose import diagnose_posterior
from sbi_core.flow_posterior import ConditionalFlowPosterior
from tests.sbi_core.posterior_helpers import gaussian_linear_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    store = gaussian_linear_store(tmp_path_factory.mktemp("gl-cal") / "gl.zarr", n=5000, dim=2, seed=3)
    post = ConditionalFlowPosterior(parameter_dim=2, flow_family="affine", parameter_space="physical",
                                    embedding_dim=16, hidden_dim=32, num_coupling_layers=3, num_epochs=60,
                                    batch_size=128, learning_rate=1e-3, use_cosine_schedule=True,
                                    early_stopping_patience=15, seed=0)
    post.fit(store)
    return post, store


def test_trained_gaussian_linear_posterior_is_calibrated(trained):
    post, store = trained
    report = diagnose_posterior(post, store, split="test", num_observations=None, num_samples=500, seed=0)
    cov = report.coverage
    assert cov.calibration_error <= cov.calibration_error_floor + 0.01, (cov.calibration_error,
                                                                         cov.calibration_error_floor)
    assert report.passed, report.failures
    # Posterior variance 0.05 against prior variance 0.1.
    np.testing.assert_allclose(report.pp.contraction, 0.5, atol=0.1)


@pytest.mark.parametrize("distortion", ["halved widths", "shifted by one posterior sd"])
def test_a_distorted_copy_of_the_trained_posterior_is_flagged_by_every_method(trained, distortion):
    post, store = trained
    from sbi_core.calibration.diagnose import select_observations
    from sbi_core.calibration.posterior_arrays import blocks_from_stacked, posterior_calibration_arrays

    theta, obs = store.read(select_observations(store, "test", None))
    arrays = posterior_calibration_arrays(post, theta, blocks_from_stacked(store.observation_schema, obs),
                                          num_samples=500, seed=0, with_log_prob=False)
    mean = arrays.samples.mean(axis=1, keepdims=True)
    sd = arrays.samples.std(axis=1, keepdims=True)
    draws = mean + 0.5 * (arrays.samples - mean) if distortion == "halved widths" else arrays.samples + sd
    report = run_calibration(draws, arrays.true_parameters, None, None,
                             parameter_names=store.parameter_names, seed=0)
    assert not report.passed
    for method in ("coverage:", "sbc:", "tarp:"):
        assert any(f.startswith(method) for f in report.failures), (method, report.failures)
