"""Hypothesis fuzz: randomly mutated small stores never make ``validate_store`` raise."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.validation.store_factory import tree_digest, write_valid_store
from validation import ValidationReport, validate_store

ARRAYS = ["parameters", "blocks/spectrum/values", "blocks/spectrum/uncertainties",
          "blocks/spectrum/mask", "blocks/spectrum/coordinates", "blocks/photometry/values",
          "splits/train", "splits/test"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 100) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6)


@pytest.fixture(scope="module")
def base_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_valid_store(tmp_path_factory.mktemp("fuzz") / "base.zarr")


def _set_element(path: Path, data: st.DataObject) -> None:
    array = zarr.open_group(str(path), mode="r+")[data.draw(st.sampled_from(ARRAYS))]
    index = tuple(data.draw(st.integers(0, n - 1)) for n in array.shape)
    value = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e30, 3.0, 1e-30]))
    array[index] = value if array.dtype.kind == "f" else int(np.nan_to_num(value) % 97)


def _edit_manifest(path: Path, data: st.DataObject) -> None:
    group = zarr.open_group(str(path), mode="r+")
    manifest = json.loads(json.dumps(group.attrs["sbi_store"]))
    target = manifest
    for _ in range(data.draw(st.integers(0, 3))):
        if isinstance(target, dict) and target:
            key = data.draw(st.sampled_from(sorted(target)))
        elif isinstance(target, list) and target:
            key = data.draw(st.integers(0, len(target) - 1))
        else:
            break
        if not isinstance(target[key], (dict, list)):
            break
        target = target[key]
    if isinstance(target, dict):
        target[data.draw(st.sampled_from(sorted(target) + ["extra"]))] = data.draw(JSON_VALUES)
    elif target:
        target[data.draw(st.integers(0, len(target) - 1))] = data.draw(JSON_VALUES)
    group.attrs["sbi_store"] = manifest


def _damage_file(path: Path, data: st.DataObject) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    victim = data.draw(st.sampled_from(files))
    action = data.draw(st.sampled_from(["delete", "truncate", "garbage"]))
    if action == "delete":
        victim.unlink()
    elif action == "truncate":
        victim.write_bytes(victim.read_bytes()[: data.draw(st.integers(0, 40))])
    else:
        victim.write_bytes(data.draw(st.binary(min_size=1, max_size=64)))


MUTATIONS = [_set_element, _edit_manifest, _damage_file]


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])


@settings(max_examples=8, **SETTINGS)
@given(data=st.data())
def test_mutated_stores_never_raise(base_store: Path, data: st.DataObject) -> None:
    _fuzz_once(base_store, data)


@pytest.mark.slow
@settings(max_examples=150, **SETTINGS)
@given(data=st.data())
def test_mutated_stores_never_raise_many(base_store: Path, data: st.DataObject) -> None:
    _fuzz_once(base_store, data)


def _fuzz_once(base_store: Path, data: st.DataObject) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="sbi-fuzz-"))
    store = workdir / "store.zarr"
    shutil.copytree(base_store, store)
    for _ in range(data.draw(st.integers(1, 3))):
        try:
            data.draw(st.sampled_from(MUTATIONS))(store, data)
        except Exception:  # noqa: BLE001 - an earlier mutation broke what this one edits
            break
    before = tree_digest(store)
    report = validate_store(store, chunk_size=data.draw(st.sampled_from([None, 7, 32])),
                            fingerprint=False)
    assert isinstance(report, ValidationReport)
    assert not [f for f in report.failures if f.check == "internal"], report.summary()
    json.loads(report.to_json())
    assert tree_digest(store) == before
    shutil.rmtree(workdir)
