"""ObservationPreprocessor: streamed fit on train only, standardisation, masks, jit, payload,
per-sample level centring of spectrum blocks (payload version 2) and version-1 payloads."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import zarr

from sbi_core.dataset import open_store
from sbi_core.observation import PreStackedObservations
from sbi_core.preprocessing import ObservationPreprocessor, fit_preprocessing, level_block_name

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
    pre = ObservationPreprocessor.fit(s, center_blocks=())
    train = s.split_indices("train")
    v, m = values[train], mask[train]
    expected_mean = np.array([v[m[:, j], j].mean() for j in range(L)])
    expected_std = np.array([v[m[:, j], j].std() for j in range(L)])
    expected_std[3] = 1.0  # constant feature -> std 1, no divide-by-zero
    np.testing.assert_allclose(pre.mean["spec"], expected_mean, rtol=1e-12)
    np.testing.assert_allclose(pre.std["spec"], expected_std, rtol=1e-10)
    assert pre.metadata["split"] == "train" and pre.metadata["n_samples"] == len(train)
    assert pre.metadata["store_fingerprint"] == s.fingerprint
    all_rows = fit_preprocessing(s, "all", center_blocks=())
    assert not np.allclose(all_rows.mean["spec"], pre.mean["spec"])


def test_apply_standardises_values_and_uncertainties_and_zeroes_masked(store):
    s, _, _ = store
    pre = ObservationPreprocessor.fit(s, center_blocks=())
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


# ---------------------------------------------------------------- level centring (version 2)


def _levels(values, mask):
    v = np.where(mask, values, 0.0)
    n = mask.sum(axis=1)
    return v.sum(axis=1) / np.maximum(n, 1), n


def test_spectrum_blocks_are_centred_by_default_with_train_statistics(store):
    s, values, mask = store
    pre = ObservationPreprocessor.fit(s)
    assert pre.center_blocks == ("spec",) and pre.derived_block_names == ("spec.level",)
    train = s.split_indices("train")
    v, m = values[train], mask[train]
    level, n = _levels(v, m)
    centred = v - level[:, None]
    expected_mean = np.array([centred[m[:, j], j].mean() for j in range(L)])
    expected_std = np.array([centred[m[:, j], j].std() for j in range(L)])
    np.testing.assert_allclose(pre.mean["spec"], expected_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pre.std["spec"], expected_std, rtol=1e-10)
    np.testing.assert_allclose(pre.level_mean["spec"], level[n > 0].mean(), rtol=1e-12)
    np.testing.assert_allclose(pre.level_std["spec"], level[n > 0].std(), rtol=1e-10)
    assert "aux" not in pre.center_blocks  # auxiliary blocks are not centred


def test_centred_apply_values_uncertainties_level_block_and_masks(store):
    s, values, mask = store
    pre = ObservationPreprocessor.fit(s)
    _, obs = s.read("train")
    out = pre.apply(obs)
    assert set(out.values) == {"spec", "aux", "spec.level"}
    m = obs.masks["spec"]
    level, n = _levels(values[s.split_indices("train")], m)
    std = pre.std["spec"]
    expected = (values[s.split_indices("train")] - level[:, None] - pre.mean["spec"]) / std
    np.testing.assert_allclose(out.values["spec"][m], expected[m], rtol=1e-9, atol=1e-9)
    assert np.all(out.values["spec"][~m] == 0) and np.all(out.uncertainties["spec"][~m] == 1)
    # the shift leaves uncertainties unchanged: sigma / std, as without centring
    np.testing.assert_allclose(out.uncertainties["spec"][m[:, 2], 2], 0.5 / std[2])
    lv = out.values["spec.level"]
    assert lv.shape == (len(level), 1)
    np.testing.assert_allclose(lv[:, 0], (level - pre.level_mean["spec"]) / pre.level_std["spec"], rtol=1e-9)
    np.testing.assert_allclose(lv.mean(), 0, atol=1e-9)
    # level uncertainty: standard error of the valid-element mean, in level-standardised units
    np.testing.assert_allclose(out.uncertainties["spec.level"][:, 0],
                               0.5 * np.sqrt(n) / n / pre.level_std["spec"], rtol=1e-9)
    assert out.masks["spec.level"].shape == (len(level), 1) and out.masks["spec.level"].all()
    assert "aux.level" not in out.values and "aux" not in out.uncertainties


def test_fully_masked_rows_give_no_nan_numpy_and_jit(store):
    s, _, _ = store
    pre = ObservationPreprocessor.fit(s)
    _, obs = s.read("validation")
    mask = np.array(obs.masks["spec"])
    mask[0] = False  # one fully masked row
    vals = np.array(obs.values["spec"])
    vals[0] = np.nan
    obs = PreStackedObservations(values={**obs.values, "spec": vals}, uncertainties=dict(obs.uncertainties),
                                 masks={"spec": mask})
    for out in (pre.apply(obs), jax.jit(pre.apply)(jax.tree_util.tree_map(jnp.asarray, obs))):
        for tree in (out.values, out.uncertainties):
            for name, a in tree.items():
                assert np.all(np.isfinite(np.asarray(a))), name
        assert float(out.values["spec.level"][0, 0]) == 0.0 and float(out.uncertainties["spec.level"][0, 0]) == 1.0
        assert not bool(out.masks["spec.level"][0, 0]) and bool(np.asarray(out.masks["spec.level"][1:]).all())


def test_centred_jit_matches_numpy_and_version2_payload_round_trips(store):
    s, _, _ = store
    pre = ObservationPreprocessor.fit(s)
    payload = json.loads(json.dumps(pre.to_payload()))
    assert payload["version"] == 2 and payload["center_blocks"] == ["spec"] and set(payload["levels"]) == {"spec"}
    restored = ObservationPreprocessor.from_payload(payload)
    assert restored.center_blocks == ("spec",) and restored.level_std == pre.level_std
    _, obs = s.read("validation")
    obs32 = jax.tree_util.tree_map(lambda a: a.astype(np.float32) if a.dtype == np.float64 else a, obs)
    jitted = jax.jit(restored.apply)(jax.tree_util.tree_map(jnp.asarray, obs32))
    direct = pre.apply(obs32)
    assert set(jitted.values) == set(direct.values) == {"spec", "aux", "spec.level"}
    for tree_j, tree_d in ((jitted.values, direct.values), (jitted.uncertainties, direct.uncertainties)):
        for name in tree_d:
            assert isinstance(tree_d[name], np.ndarray) and tree_d[name].dtype == np.float32
            np.testing.assert_allclose(np.asarray(tree_j[name]), tree_d[name], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(jitted.masks["spec.level"]), direct.masks["spec.level"])


def test_version1_payload_loads_without_centring(store):
    s, _, _ = store
    plain = ObservationPreprocessor.fit(s, center_blocks=())
    v1 = {k: v for k, v in plain.to_payload().items() if k not in ("center_blocks", "levels")}
    v1["version"] = 1
    old = ObservationPreprocessor.from_payload(json.loads(json.dumps(v1)))
    assert old.center_blocks == () and old.derived_block_names == ()
    _, obs = s.read("validation")
    a, b = old.apply(obs), plain.apply(obs)
    assert set(a.values) == {"spec", "aux"}
    for name in a.values:
        np.testing.assert_array_equal(a.values[name], b.values[name])
    schema = s.observation_schema
    assert old.output_schema(schema) is schema  # the network is built exactly as before
    with pytest.raises(ValueError, match="payload.version"):
        ObservationPreprocessor.from_payload({**v1, "version": 3})
    with pytest.raises(ValueError, match="payload.center_blocks"):
        ObservationPreprocessor.from_payload({**v1, "version": 2})


def test_output_schema_adds_the_derived_block_and_apply_refuses_it(store):
    s, _, _ = store
    pre = ObservationPreprocessor.fit(s)
    out = pre.output_schema(s.observation_schema)
    assert [b.name for b in out.blocks] == ["spec", "aux", level_block_name("spec")]
    derived = out.blocks[-1]
    assert (derived.modality, derived.length, derived.has_uncertainties) == ("auxiliary", 1, True)
    assert pre.output_schema(out) is out  # idempotent
    _, obs = s.read("validation")
    with_level = pre.apply(obs)
    with pytest.raises(ValueError, match="observation blocks"):
        pre.apply(with_level)  # the derived block is not an input block
    with pytest.raises(ValueError, match="not in the store"):
        ObservationPreprocessor.fit(s, center_blocks=("nope",))
