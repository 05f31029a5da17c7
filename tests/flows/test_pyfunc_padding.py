"""The pyfunc model's padding: one observation samples one padded row, not eight (no JAX fit)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from flows.pyfunc_io import BlockColumn

COLUMNS = [BlockColumn("x", 2, "auxiliary", False)]


class _FakePosterior:
    """Records the shapes the model asks for; draws are the row index (physical = identity)."""

    parameter_space = "physical"
    parameter_names = ("a", "b")
    seed = 0

    def __init__(self) -> None:
        self.encoded_rows: list[int] = []
        self.sampled: list[tuple[int, int]] = []

    def batch_encode_observation(self, blocks_list):
        self.encoded_rows.append(len(blocks_list))
        return [SimpleNamespace(embedding=np.full(3, float(i), np.float32)) for i in range(len(blocks_list))]

    def batch_sample_posterior(self, embeddings, n_samples, base_seed=0):
        self.sampled.append((embeddings.shape[0], n_samples))
        return np.broadcast_to(embeddings[:, :1, None], (embeddings.shape[0], n_samples, 2)).copy()

    def to_physical(self, samples):
        return samples


def _model():
    from flows.pyfunc_model import SbiPosteriorModel

    model = SbiPosteriorModel()
    model.posterior, model.columns = _FakePosterior(), COLUMNS
    return model


def _frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"x": [[0.1 * i, 0.2] for i in range(rows)]})


def test_one_observation_samples_one_row_of_a_bucketed_draw_count():
    model = _model()
    out = model.predict(None, _frame(1), params={"num_samples": 1000})
    assert model.posterior.encoded_rows == [1]
    assert model.posterior.sampled == [(1, 1024)]
    assert len(out) == 1000 and set(out["observation_index"]) == {0}


def test_rows_are_padded_to_powers_of_two_and_the_padding_is_dropped():
    model = _model()
    out = model.predict(None, _frame(3), params={"num_samples": 5})
    assert model.posterior.sampled == [(4, 8)]
    assert len(out) == 15 and out["observation_index"].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    np.testing.assert_array_equal(out.groupby("observation_index")["a"].first().to_numpy(), [0.0, 1.0, 2.0])


def test_draws_are_returned_in_physical_units_via_to_physical():
    from sbi_core.posterior_base import PersistentPosteriorEstimator as PosteriorEstimator, PosteriorSamples
    from sbi_core.posterior_metadata import parameter_transform_from_payloads

    class _Unconstrained(_FakePosterior):
        parameter_space = "unconstrained"
        parameter_transform = parameter_transform_from_payloads(
            ({"kind": "uniform", "low": -1.0, "high": 1.0}, {"kind": "uniform", "low": 0.0, "high": 5.0}))
        to_physical = PosteriorEstimator.to_physical
        _require_transform = PosteriorEstimator._require_transform

    model = _model()
    model.posterior = _Unconstrained()
    out = model.predict(None, _frame(2), params={"num_samples": 3})
    draws = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]], np.float32), 3, axis=0)
    expected = model.posterior.to_physical(PosteriorSamples(samples=draws, metadata={"parameter_space": "unconstrained"}))
    np.testing.assert_allclose(out[["a", "b"]].to_numpy(), np.asarray(expected.samples), rtol=1e-6)
    np.testing.assert_allclose(out[["a", "b"]].to_numpy()[0], [0.0, 2.5], atol=1e-6)
