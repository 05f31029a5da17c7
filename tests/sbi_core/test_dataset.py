"""Store format 1.0: round trips, plain-zarr and zip stores, splits, fingerprint, format errors."""

from __future__ import annotations

import os
import shutil
import zipfile

import numpy as np
import pytest
import zarr

from sbi_core.dataset import (
    StoreFormatError,
    create_store,
    default_split_indices,
    open_store,
)
from sbi_core.observation import ObservationModality
from tests.sbi_core.test_dataset_support import PARAMETERS, all_modalities_payload, random_chunk

MASKED = ("light_curve", "spectrum")  # spectrum: mask + uncertainties + coordinates


def _write_store(path, n=23, chunk=5, seed=0, dtype=np.float64, payload=None):
    """Write random rows (fixed by ``seed``, independent of ``chunk``) through the writer."""
    payload = payload or all_modalities_payload()
    params, blocks = random_chunk(np.random.default_rng(seed), n, payload, MASKED)
    with create_store(path, task_payload=payload, n_samples=n, chunk_size=chunk, dtype=dtype, mask_blocks=MASKED) as writer:
        for i in range(writer.n_chunks):
            rows = slice(*writer.chunk_bounds(i))
            writer.write_chunk(i, params[rows], {b: {k: v[rows] for k, v in a.items()} for b, a in blocks.items()})
        store = writer.finalize()
    return store, params, blocks


def test_round_trip_every_modality(tmp_path):
    store, params, blocks = _write_store(tmp_path / "s.zarr")
    store = open_store(tmp_path / "s.zarr", dtype=np.float64)
    got_params, obs = store.read("all")
    np.testing.assert_array_equal(got_params, params)
    for name, arrays in blocks.items():
        mask = arrays.get("mask", np.ones_like(arrays["values"], bool))
        np.testing.assert_array_equal(obs.values[name], np.where(mask, arrays["values"], 0))
        if "uncertainties" in arrays:
            np.testing.assert_array_equal(obs.uncertainties[name], np.where(mask, arrays["uncertainties"], 1))
    assert set(obs.uncertainties) == {"spectrum", "photometry"}
    np.testing.assert_array_equal(obs.masks["light_curve"], blocks["light_curve"]["mask"])
    assert set(obs.masks) == {"light_curve", "spectrum"}
    schema = store.observation_schema
    assert [b.modality for b in schema.blocks] == list(ObservationModality)
    np.testing.assert_allclose(schema.block("spectrum").coordinates, np.linspace(0.5, 5, 7))
    assert schema.block("photometry").coordinates is None
    assert store.parameter_names == ("radius", "log_x", "temperature")
    assert [s.prior.to_payload()["kind"] for s in store.parameter_specs] == ["uniform", "normal", "log_uniform"]
    assert store.noise_model["mode"] == "observational"
    assert (store.task_name, store.task_version, store.n_samples, store.parameter_dim) == ("toy", "0.1", 23, 3)


def test_arrays_carry_dimension_names_and_sample_chunks(tmp_path):
    _write_store(tmp_path / "s.zarr", chunk=5)
    group = zarr.open_group(tmp_path / "s.zarr", mode="r")
    assert group["parameters"].metadata.dimension_names == ("sample", "parameter")
    assert group["blocks/spectrum/values"].metadata.dimension_names == ("sample", "spectrum_element")
    assert group["blocks/spectrum/coordinates"].metadata.dimension_names == ("spectrum_element",)
    assert group["blocks/spectrum/values"].chunks == (5, 7)
    assert "_sbi_writer_progress" not in group


def _hand_written(path, n=12):
    """A store written with nothing but plain zarr, following docs/store-format.md."""
    rng = np.random.default_rng(1)
    root = zarr.open_group(str(path), mode="w")
    root.attrs["sbi_store"] = {
        "format_version": "1.0",
        "task": {"name": "external", "version": "2024.1"},
        "parameters": PARAMETERS[:2],
        "blocks": [{"name": "spec", "modality": "spectrum", "length": 4, "has_uncertainties": True}],
        "n_samples": n,
    }
    root.create_array("parameters", data=rng.normal(size=(n, 2)).astype("float32"), chunks=(4, 2))
    root.create_array("blocks/spec/values", data=rng.normal(size=(n, 4)), chunks=(3, 4))
    root.create_array("blocks/spec/uncertainties", data=rng.uniform(1, 2, size=(n, 4)), chunks=(7, 4))
    root.create_array("blocks/spec/coordinates", data=np.array([1.0, 1.5, 2.0, 3.0]))
    return root


def test_hand_written_plain_zarr_store_reads(tmp_path):
    root = _hand_written(tmp_path / "ext.zarr")
    store = open_store(tmp_path / "ext.zarr", dtype=np.float64)
    params, obs = store.read("all")
    np.testing.assert_array_equal(params, root["parameters"][:])
    np.testing.assert_array_equal(obs.values["spec"], root["blocks/spec/values"][:])
    assert store.noise_model is None and store.parameter_dim == 2
    batches = list(store.iter_batches("all", batch_size=5, shuffle=True, seed=3))
    assert sorted(np.concatenate([b.metadata["indices"] for b in batches]).tolist()) == list(range(12))


def test_zip_store_reads_and_fingerprint_matches_directory(tmp_path):
    store, params, _ = _write_store(tmp_path / "s.zarr")
    archive = tmp_path / "s.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for folder, _, files in os.walk(tmp_path / "s.zarr"):
            for f in files:
                full = os.path.join(folder, f)
                zf.write(full, os.path.relpath(full, tmp_path / "s.zarr"))
    zipped = open_store(archive, dtype=np.float64)
    np.testing.assert_array_equal(zipped.read("train")[0], params[zipped.split_indices("train")])
    assert zipped.fingerprint == store.fingerprint
    zipped.close()


def test_default_splits_deterministic_disjoint_and_near_80_10_10():
    n = 20_000
    parts = [default_split_indices(n, s) for s in ("train", "validation", "test")]
    assert sum(len(p) for p in parts) == n
    assert len(np.unique(np.concatenate(parts))) == n
    np.testing.assert_allclose([len(p) / n for p in parts], [0.8, 0.1, 0.1], atol=0.01)
    # Stable: independent of n (a prefix), and pinned values guard against silent changes.
    np.testing.assert_array_equal(default_split_indices(1000, "test"), parts[2][parts[2] < 1000])
    assert default_split_indices(40, "test").tolist() == [23, 26, 29, 34]


def test_explicit_splits_are_honoured_and_validated(tmp_path):
    root = _hand_written(tmp_path / "ext.zarr")
    root.create_array("splits/train", data=np.array([5, 0, 1, 2], dtype=np.int64))
    root.create_array("splits/test", data=np.array([11], dtype=np.int64))
    store = open_store(tmp_path / "ext.zarr")
    assert store.split_indices("train").tolist() == [0, 1, 2, 5]
    assert store.split_indices("validation").tolist() == []
    assert store.split_indices("test").tolist() == [11]
    root.create_array("splits/validation", data=np.array([2, 7], dtype=np.int64))
    with pytest.raises(StoreFormatError, match=r"splits/validation: index 2 is also in splits/train"):
        open_store(tmp_path / "ext.zarr")


def test_fingerprint_independent_of_chunking_and_storage_dtype(tmp_path):
    a, _, _ = _write_store(tmp_path / "a.zarr", chunk=5, dtype=np.float64)
    b, _, _ = _write_store(tmp_path / "b.zarr", chunk=23, dtype=np.float64)
    assert a.fingerprint == b.fingerprint
    assert len(a.fingerprint) == 64
    # A float32 store and a float64 store holding the same (float32-representable) numbers.
    root = zarr.open_group(tmp_path / "b.zarr", mode="r+")
    for path in ("parameters", "blocks/spectrum/values"):
        root[path][...] = root[path][...].astype(np.float32)
    f64 = open_store(tmp_path / "b.zarr").fingerprint
    shutil.copytree(tmp_path / "b.zarr", tmp_path / "b32.zarr")
    root32 = zarr.open_group(tmp_path / "b32.zarr", mode="r+")
    for path in ("parameters", "blocks/spectrum/values"):
        data = root32[path][...]
        root32.create_array(path, data=data.astype(np.float32), chunks=(4, data.shape[1]), overwrite=True)
    assert open_store(tmp_path / "b32.zarr").fingerprint == f64
    c, _, _ = _write_store(tmp_path / "c.zarr", chunk=5, seed=1)
    assert c.fingerprint != a.fingerprint


def test_fingerprint_sensitive_to_one_value_and_to_metadata(tmp_path):
    _hand_written(tmp_path / "x.zarr")
    before = open_store(tmp_path / "x.zarr").fingerprint
    root = zarr.open_group(tmp_path / "x.zarr", mode="r+")
    values = root["blocks/spec/values"]
    values[7, 2] = np.nextafter(values[7, 2], np.inf)
    after = open_store(tmp_path / "x.zarr").fingerprint
    assert after != before
    meta = dict(root.attrs["sbi_store"])
    meta["task"] = {"name": "external", "version": "2024.2"}
    root.attrs["sbi_store"] = meta
    assert open_store(tmp_path / "x.zarr").fingerprint not in (before, after)


def test_reading_never_modifies_the_store(tmp_path):
    _write_store(tmp_path / "s.zarr")
    snapshot = {p: os.path.getmtime(p) for p in _files(tmp_path / "s.zarr")}
    store = open_store(tmp_path / "s.zarr", memory_budget_bytes=0)
    list(store.iter_batches("train", batch_size=4))
    _ = store.fingerprint
    assert {p: os.path.getmtime(p) for p in _files(tmp_path / "s.zarr")} == snapshot


def _files(root):
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.attrs.update({"sbi_store": {**r.attrs["sbi_store"], "format_version": "2.0"}}), r"format_version: '2.0', this reader supports '1.0'"),
        (lambda r: r.attrs.update({"sbi_store": {**r.attrs["sbi_store"], "n_samples": 13}}), r"parameters: shape \(12, 2\), expected \(13, 2\)"),
        (lambda r: r.create_array("blocks/spec/mask", data=np.ones((12, 4), "uint8")), r"blocks/spec/mask: dtype uint8, expected bool"),
        (lambda r: r.__delitem__("blocks/spec/uncertainties"), r"blocks/spec/uncertainties: missing array"),
        (lambda r: r.create_array("blocks/spec/coordinates", data=np.array([1.0, 1.0, 2, 3]), overwrite=True), r"strictly increasing"),
        (lambda r: r.attrs.update({"sbi_store": {**r.attrs["sbi_store"], "parameters": [{"name": "a", "unit": "", "prior": {"kind": "log_uniform", "low": 0, "high": 1}}] * 2}}), r"parameters\[0\].prior.low: log_uniform needs low > 0"),
    ],
)
def test_malformed_stores_name_what_is_wrong(tmp_path, mutate, message):
    root = _hand_written(tmp_path / "bad.zarr")
    mutate(root)
    with pytest.raises(StoreFormatError, match=message):
        open_store(tmp_path / "bad.zarr")


def test_missing_path_and_non_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_store(tmp_path / "nope.zarr")
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(StoreFormatError, match="not a zip archive"):
        open_store(tmp_path / "plain.txt")
    zarr.open_group(tmp_path / "empty.zarr", mode="w")
    with pytest.raises(StoreFormatError, match="missing attribute 'sbi_store'"):
        open_store(tmp_path / "empty.zarr")


def test_read_by_indices_keeps_order(tmp_path):
    store, params, _ = _write_store(tmp_path / "s.zarr")
    store = open_store(tmp_path / "s.zarr", dtype=np.float64)
    idx = np.array([22, 3, 3, 0, 17])
    got, obs = store.read(idx)
    np.testing.assert_array_equal(got, params[idx])
    assert obs.batch_size == 5
    with pytest.raises(IndexError, match="out of range"):
        store.read(np.array([23]))
    with pytest.raises(ValueError, match="split: 'training'"):
        store.split_indices("training")
