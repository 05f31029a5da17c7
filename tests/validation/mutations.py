"""The catalogue of broken stores: each entry breaks the valid reference store in one way.

Entry: (id, mutate(path) -> path of the store to validate, expected check, a substring of the
failing location, the sample (or feature) index the report must name, or None).
"""

from __future__ import annotations

import copy
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import zarr

from tests.validation.store_factory import CHUNK, N_SAMPLES


class Case(NamedTuple):
    id: str
    mutate: Callable[[Path], Path]
    check: str
    location: str
    index: int | None = None


def _group(path: Path) -> zarr.Group:
    return zarr.open_group(str(path), mode="r+", zarr_format=3)


def edit_manifest(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path], Path]:
    """Edit the manifest in place (the callable's return value is ignored)."""
    def mutate(path: Path) -> Path:
        group = _group(path)
        m = copy.deepcopy(dict(group.attrs["sbi_store"]))
        edit(m)
        group.attrs["sbi_store"] = m
        return path
    return mutate


def replace_manifest(value: Any) -> Callable[[Path], Path]:
    def mutate(path: Path) -> Path:
        _group(path).attrs["sbi_store"] = value
        return path
    return mutate


def set_value(array: str, index: tuple[int, ...], value: float) -> Callable[[Path], Path]:
    def mutate(path: Path) -> Path:
        group = _group(path)
        group[array][index] = value
        return path
    return mutate


def replace_array(array: str, make: Callable[[np.ndarray], np.ndarray],
                  chunks: Any = "auto") -> Callable[[Path], Path]:
    def mutate(path: Path) -> Path:
        group = _group(path)
        old = group[array][...]
        parent, _, name = array.rpartition("/")
        target = group[parent] if parent else group
        del target[name]
        target.create_array(name, data=make(old), chunks=chunks)
        return path
    return mutate


def delete(member: str) -> Callable[[Path], Path]:
    def mutate(path: Path) -> Path:
        shutil.rmtree(path / member)
        return path
    return mutate


def create(array: str, data: np.ndarray) -> Callable[[Path], Path]:
    def mutate(path: Path) -> Path:
        _group(path).create_array(array, data=data)
        return path
    return mutate


def _write_bytes(relative: str, transform: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    def mutate(path: Path) -> Path:
        target = path / relative
        target.write_bytes(transform(target.read_bytes()))
        return path
    return mutate


def _empty_directory(path: Path) -> Path:
    shutil.rmtree(path)
    path.mkdir()
    return path


def _to_zip(path: Path) -> Path:
    archive = path.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            zf.write(file, file.relative_to(path).as_posix())
    shutil.rmtree(path)
    return archive


def zipped(mutate: Callable[[Path], Path]) -> Callable[[Path], Path]:
    return lambda path: _to_zip(mutate(path))


def _truncate_zip(path: Path) -> Path:
    archive = _to_zip(path)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    return archive


def _duplicate_sample(path: Path, src: int = 3, dst: int = 40) -> Path:
    group = _group(path)
    for name in ("parameters", "blocks/spectrum/values", "blocks/photometry/values"):
        group[name][dst] = group[name][src]
    return path


def _narrow_temperature(path: Path) -> Path:
    rng = np.random.default_rng(1)
    _group(path)["parameters"][:, 0] = rng.uniform(500.0, 700.0, N_SAMPLES).astype(np.float32)
    return path


def _pop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.pop(key)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m.__setitem__(key, value)


def _block_field(i: int, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m["blocks"][i].__setitem__(key, value)


def _prior(i: int, prior: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda m: m["parameters"][i].__setitem__("prior", prior)


def _delete_manifest(path: Path) -> Path:
    del _group(path).attrs["sbi_store"]
    return path


SPEC = "blocks/spectrum"
PHOT = "blocks/photometry"
CASES: list[Case] = [
    Case("missing_attribute", _delete_manifest, "manifest_present", "sbi_store"),
    Case("bad_json", replace_manifest("{'format_version': 1.0,"), "manifest_present",
         "sbi_store"),
    Case("manifest_not_object", replace_manifest([1, 2]), "manifest_present",
         "sbi_store"),
    Case("unknown_format_version", edit_manifest(_set("format_version", "2.0")),
         "format_version", "sbi_store.format_version"),
    Case("missing_task_name", edit_manifest(lambda m: m["task"].pop("name")),
         "manifest_field", "sbi_store.task.name"),
    Case("empty_directory", _empty_directory, "store_readable", "store.zarr"),
    Case("n_samples_zero", edit_manifest(_set("n_samples", 0)), "empty_store",
         "sbi_store.n_samples"),
    Case("n_samples_mismatch", edit_manifest(_set("n_samples", N_SAMPLES + 1)), "n_samples",
         "parameters"),
    Case("n_samples_missing", edit_manifest(_pop("n_samples")), "manifest_field",
         "sbi_store.n_samples"),
    Case("missing_parameters_array", delete("parameters"), "array_missing", "parameters"),
    Case("missing_values_array", delete(f"{PHOT}/values"), "array_missing", f"{PHOT}/values"),
    Case("parameters_wrong_shape", replace_array("parameters", lambda a: a[:, :2]),
         "array_shape", "parameters"),
    Case("values_one_dimensional", replace_array(f"{PHOT}/values", lambda a: a[:, 0]),
         "array_shape", f"{PHOT}/values"),
    Case("values_integer_dtype",
         replace_array(f"{SPEC}/values", lambda a: (a * 100).astype(np.int32)),
         "array_dtype", f"{SPEC}/values"),
    Case("parameters_float16_dtype", replace_array("parameters", lambda a: a.astype(np.float16)),
         "array_dtype", "parameters"),
    Case("mask_float_dtype", replace_array(f"{SPEC}/mask", lambda a: a.astype(np.float32)),
         "array_dtype", f"{SPEC}/mask"),
    Case("nan_in_values", set_value(f"{SPEC}/values", (17, 3), np.nan), "values_finite",
         f"{SPEC}/values", 17),
    Case("inf_in_values", set_value(f"{PHOT}/values", (40, 0), np.inf), "values_finite",
         f"{PHOT}/values", 40),
    Case("value_above_constraint", set_value(f"{SPEC}/values", (7, 0), 1.5),
         "values_constraint", f"{SPEC}/values", 7),
    Case("zero_uncertainty", set_value(f"{SPEC}/uncertainties", (5, 2), 0.0),
         "uncertainties_positive", f"{SPEC}/uncertainties", 5),
    Case("negative_uncertainty", set_value(f"{SPEC}/uncertainties", (9, 0), -0.01),
         "uncertainties_positive", f"{SPEC}/uncertainties", 9),
    Case("nan_uncertainty", set_value(f"{SPEC}/uncertainties", (33, 1), np.nan),
         "uncertainties_finite", f"{SPEC}/uncertainties", 33),
    Case("uncertainties_not_declared", create(f"{PHOT}/uncertainties", np.ones((64, 4))),
         "uncertainties_declared", f"{PHOT}/uncertainties"),
    Case("declared_uncertainties_missing", delete(f"{SPEC}/uncertainties"), "array_missing",
         f"{SPEC}/uncertainties"),
    Case("parameter_above_uniform_bound", set_value("parameters", (12, 0), 3000.0),
         "parameters_in_support", "temperature", 12),
    Case("parameter_below_log_uniform_bound", set_value("parameters", (20, 2), 0.1),
         "parameters_in_support", "radius", 20),
    Case("parameter_nan", set_value("parameters", (50, 1), np.nan), "parameters_finite",
         "log_metallicity", 50),
    Case("parameter_inf", set_value("parameters", (51, 1), -np.inf), "parameters_finite",
         "log_metallicity", 51),
    Case("parameters_not_from_prior", _narrow_temperature, "prior_ks", "temperature"),
    Case("duplicate_samples", _duplicate_sample, "duplicate_samples", "<store>", 40),
    Case("unsorted_coordinates", replace_array(f"{SPEC}/coordinates", lambda a: a[::-1]),
         "coordinates", f"{SPEC}/coordinates", 1),
    Case("duplicate_coordinates", set_value(f"{SPEC}/coordinates", (5,), 1.773333),
         "coordinates", f"{SPEC}/coordinates", 5),
    Case("nan_coordinate", set_value(f"{SPEC}/coordinates", (2,), np.nan), "coordinates",
         f"{SPEC}/coordinates", 2),
    Case("coordinates_wrong_length", replace_array(f"{SPEC}/coordinates", lambda a: a[:-1]),
         "array_shape", f"{SPEC}/coordinates"),
    Case("mismatched_block_length", edit_manifest(_block_field(0, "length", 17)),
         "array_shape", f"{SPEC}/values"),
    Case("overlapping_splits", replace_array("splits/test", lambda a: np.r_[a, 0]), "splits",
         "splits/test", 0),
    Case("split_index_out_of_range", replace_array("splits/validation", lambda a: np.r_[a, 64]),
         "splits", "splits/validation", 64),
    Case("negative_split_index", replace_array("splits/validation", lambda a: np.r_[a, -1]),
         "splits", "splits/validation", -1),
    Case("split_repeats_index", replace_array("splits/train", lambda a: np.r_[a, 3]),
         "splits", "splits/train", 3),
    Case("split_float_dtype", replace_array("splits/train", lambda a: a.astype(np.float64)),
         "array_dtype", "splits/train"),
    Case("truncated_chunk", _write_bytes(f"{SPEC}/values/c/1/0", lambda b: b[: len(b) // 2]),
         "chunk_read", f"{SPEC}/values", CHUNK),
    Case("truncated_mask_chunk", _write_bytes(f"{SPEC}/mask/c/0/0", lambda b: b""),
         "chunk_read", f"{SPEC}/mask", 0),
    Case("deleted_chunk_file", lambda p: (p / f"{SPEC}/uncertainties/c/1/0").unlink() or p,
         "chunk_missing", f"{SPEC}/uncertainties", CHUNK),
    Case("deleted_split_chunk", lambda p: (p / "splits/train/c/0").unlink() or p,
         "chunk_missing", "splits/train", 0),
    Case("corrupted_root_metadata", _write_bytes("zarr.json", lambda b: b[:20]),
         "store_readable", "store.zarr"),
    Case("corrupted_chunk", _write_bytes("parameters/c/0/0", lambda b: b"\x00garbage" * 8),
         "chunk_read", "parameters", 0),
    Case("corrupted_array_metadata", _write_bytes(f"{PHOT}/values/zarr.json", lambda b: b"{"),
         "store_readable", f"{PHOT}/values"),
    Case("duplicate_block_names",
         edit_manifest(lambda m: m["blocks"].append(dict(m["blocks"][0]))),
         "block_payload", "sbi_store.blocks[2].name"),
    Case("unknown_modality", edit_manifest(_block_field(1, "modality", "radio")),
         "block_payload", "sbi_store.blocks[1].modality"),
    Case("bad_constraint", edit_manifest(_block_field(0, "constraint", {"min_value": "zero"})),
         "block_payload", "sbi_store.blocks[0].constraint.min_value"),
    Case("unknown_prior_kind", edit_manifest(_prior(0, {"kind": "beta", "a": 1, "b": 2})),
         "prior_payload", "sbi_store.parameters[0].prior"),
    Case("inverted_prior_bounds",
         edit_manifest(_prior(0, {"kind": "uniform", "low": 2.0, "high": 1.0})),
         "prior_payload", "sbi_store.parameters[0].prior"),
    Case("undeclared_block", create("blocks/extra/values", np.zeros((64, 2))),
         "array_unexpected", "blocks/extra"),
    Case("zip_store_nan", zipped(set_value(f"{SPEC}/values", (60, 15), np.nan)),
         "values_finite", f"{SPEC}/values", 60),
    Case("zip_store_missing_attribute", zipped(_delete_manifest), "manifest_present",
         "sbi_store"),
    Case("zip_store_truncated", _truncate_zip, "store_readable", "store.zip"),
]