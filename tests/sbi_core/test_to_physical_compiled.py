"""to_physical runs the parameter transform as one compiled call (same float32 values as eager)."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_core.priors import LogUniformPrior, NormalPrior, UniformPrior
from sbi_core.spaces import ParameterTransform, _transform_and_log_det_kernel, transform_and_log_det_compiled

TRANSFORM = ParameterTransform([UniformPrior(-1.0, 1.0), LogUniformPrior(1e-3, 10.0), NormalPrior(0.5, 2.0)])


@pytest.mark.parametrize("space", ["unconstrained", "cube"])
def test_compiled_transform_matches_the_eager_transform(space):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 3)) * 4 if space == "unconstrained" else rng.uniform(size=(2000, 3))
    y_eager, ld_eager = map(np.asarray, TRANSFORM.transform_and_log_det(x, space, "physical"))
    y, ld = map(np.asarray, transform_and_log_det_compiled(TRANSFORM, x, space, "physical"))
    assert y.dtype == y_eager.dtype == np.float32
    # Fused float32 exp/log may round differently by a few ulp; nothing more.
    np.testing.assert_allclose(y, y_eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ld, ld_eager, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y[:, 0], y_eager[:, 0])  # the uniform column is exact


def test_compiled_transform_compiles_once_per_shape():
    x = np.full((7, 3), 0.25)
    transform_and_log_det_compiled(TRANSFORM, x, "cube", "physical")
    before = _transform_and_log_det_kernel._cached._cache_size()
    for _ in range(3):
        transform_and_log_det_compiled(TRANSFORM, x + 0.1, "cube", "physical")
    assert _transform_and_log_det_kernel._cached._cache_size() == before
    with pytest.raises(ValueError, match="unknown parameter space"):
        transform_and_log_det_compiled(TRANSFORM, x, "cube", "latent")
