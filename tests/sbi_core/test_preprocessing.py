"""ObservationPreprocessor: streamed fit on train only, standardisation, masks, jit, payload."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import zarr

from sbi_core.dataset import open_store
from sbi_core.observation import PreStackedObservations
from sbi_core.preprocessing import ObservationPreprocessor, fit_preprocessing

N, L = 300, 5


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("pre") / "s.zarr"
    rng = np.random.default_rng(0)
    values = rng.normal(loc=[1, 2, 3, 4, 5], scale=[1, 0.1, 10, 1, 1], size=(N, L))
    values[:, 3] = 7.25  # a constant feature
    mask = rng.uniform(size=(N, L)) > 0.1
    values[~mask] = np.nan  # invalid elements must not enter the statistics
    root = zarr.open_group(str(path), mode="w")
    root.attrs["sbi_store"] = {
        "format_version": "1.0",
        "task": {"name": "t", "version": "1"},
        "parameters": [{"name": "p", "unit": "", "prior": {"kind": "uniform", "low": 0, "high": 1}}],
        "blocks": [
            {"name": "spec", "modality": "spectrum", "length": L, "has_uncertainties": True},
            {"name": "aux", "modality": "auxiliary", "length": 1, "has_uncertainties": False},
        ],
        "n_samples": N,
    }
    root.create_array("parameters", data=rng.uniform(size=(N, 1)), chunks=(32, 1))
    root.create_array("blocks/spec/values", data=values, chunks=(32, L))
    root.create_array("blocks/spec/uncertainties", data=np.full((N, L), 0.5), chunks=(32, L))
    root.create_array("blocks/spec/mask", data=mask, chunks=(32, L))
    root.create_array("blocks/aux/values", data=rng.normal(size=(N, 1)), chunks=(32, 1))
    return open_store(path, dtype=np.float64), values, mask


def test_fit_uses_train_split_only_and_matches_numpy(store):
    s, values, mask = store
    pre = ObservationPreprocessor.fit(s)
    train = s.split_indices("train")
    v, m = values[train], mask[train]
    expected_mean = np.array([v[m[:, j], j].mean() for j in range(L)])
    expected_std = np.array([v[m[:, j], j].std() for j in range(L)])
    expected_std[3] = 1.0  # constant feature -> std 1, no divide-by-zero
    np.testing.assert_allclose(pre.mean["spec"], expected_mean, rtol=1e-12)
    np.testing.assert_allclose(pre.std["spec"], expected_std, rtol=1e-10)
    assert pre.metadata["split"] == "train" and pre.metadata["n_samples"] == len(train)
    assert pre.metadata["store_fingerprint"] == s.fingerprint
    all_rows = fit_preprocessing(s, "all")
    assert not np.allclose(all_rows.mean["spec"], pre.mean["spec"])


def test_apply_standardises_values_and_uncertainties_and_zeroes_masked(store):
    s, _, _ = store
    pre = ObservationPreprocessor.fit(s)
    _, obs = s.read("train")
    out = pre.apply(obs)
    m = obs.masks["spec"]
    z = out.values["spec"]
    assert np.all(z[~m] == 0) and np.all(out.uncertainties["spec"][~m] == 1)
    for j in (0, 1, 2, 4):
        np.testing.assert_allclose(z[m[:, j], j].mean(), 0, atol=1e-12)
        np.testing.assert_allclose(z[m[:, j], j].std(), 1, rtol=1e-10)
    np.testing.assert_allclose(out.uncertainties["spec"][m[:, 2], 2], 0.5 / pre.std["spec"][2])
    assert np.all(z[:, 3] == 0)  # constant feature maps to 0, not inf/nan
    assert isinstance(out.values["spec"], np.ndarray)


def test_apply_inside_jit_matches_numpy_and_payload_round_trips(store):
    s, _, _ = store
    pre = ObservationPreprocessor.fit(s)
    _, obs = s.read("validation")
    obs32 = jax.tree_util.tree_map(lambda a: a.astype(np.float32) if a.dtype == np.float64 else a, obs)
    restored = ObservationPreprocessor.from_payload(json.loads(json.dumps(pre.to_payload())))
    jitted = jax.jit(restored.apply)(jax.tree_util.tree_map(jnp.asarray, obs32))
    direct = pre.apply(obs32)
    for name in direct.values:
        np.testing.assert_allclose(np.asarray(jitted.values[name]), direct.values[name], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(restored.std["spec"], pre.std["spec"])
    np.testing.assert_array_equal(restored.mean["aux"], pre.mean["aux"])


def test_errors_name_the_problem(store):
    s, _, _ = store
    pre = ObservationPreprocessor.fit(s)
    wrong = PreStackedObservations(values={"spec": np.zeros((2, 4)), "aux": np.zeros((2, 1))})
    with pytest.raises(ValueError, match="block 'spec' has length 4, fitted on length 5"):
        pre.apply(wrong)
    with pytest.raises(ValueError, match=r"observation blocks \['spec'\], fitted on \['aux', 'spec'\]"):
        pre.apply(PreStackedObservations(values={"spec": np.zeros((2, 5))}))
    with pytest.raises(ValueError, match="payload.kind"):
        ObservationPreprocessor.from_payload({"kind": "minmax"})
    with pytest.raises(ValueError, match="std finite and > 0"):
        ObservationPreprocessor(mean={"a": np.zeros(2)}, std={"a": np.array([1.0, 0.0])})
