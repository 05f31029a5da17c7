"""Item 2: corrupted, tampered and hostile posterior directories.

Every case starts from a real saved ``ConditionalFlowPosterior`` directory (metadata.json +
weights.eqx), damages one thing, and asserts that ``load`` raises ``PosteriorLoadError`` whose
message names the damaged file and the reason. Hostile files carry a pickle payload that would
create a marker file if it were ever unpickled; the marker must never appear.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sbi_core.metadata_checksum import SIDECAR_NAME, seal_directory
from sbi_core.persistence import PosteriorLoadError, file_sha256
from sbi_core.posterior import ConditionalFlowPosterior
from sbi_core.posterior_base import PersistentPosteriorEstimator

WEIGHTS = "weights.eqx"
# Counted in docs/reliability.md ("bad inputs tried"): keep in step with the parametrisations.
TRUNCATIONS = (0, 1, 0.5, -1)
FLIPS = 8
#: Silent edits of metadata.json that keep it valid JSON and consistent with the weights.
SILENT_EDITS = {
    "prior scale": lambda m: m["parameters"]["priors"][0].update(scale=2 * m["parameters"]["priors"][0]["scale"]),
    "parameter name": lambda m: m["parameters"]["names"].__setitem__(0, "renamed"),
    "seed": lambda m: m["estimator_config"].update(seed=m["estimator_config"]["seed"] + 1),
    "standardisation": lambda m: m["flow_posterior"]["standardization"]["scale"].__setitem__(0, 2.0),
    "whitespace only": lambda m: None,
}
METADATA_FLIPS = 6


@pytest.fixture(scope="module")
def saved(saved_models) -> Path:
    return saved_models["A"]


@pytest.fixture
def model(saved, tmp_path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(saved, copy)
    return copy


class Marker:
    """A pickle payload: unpickling it creates ``path`` (proof that code ran)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def hostile_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Marker(marker), protocol=4))


def meta(model: Path) -> dict:
    return json.loads((model / "metadata.json").read_text())


def write_meta(model: Path, payload: dict) -> None:
    """A deliberate, consistent edit: metadata.json rewritten and its sidecar resealed, as an
    attacker who can write the directory would. The checks behind the sidecar must hold alone."""
    (model / "metadata.json").write_text(json.dumps(payload))
    seal_directory(model)


def record_weight_checksum(model: Path) -> None:
    """Make metadata.json (and its sidecar) vouch for whatever the weight file now holds."""
    payload = meta(model)
    payload["weights"]["files"][WEIGHTS]["sha256"] = file_sha256(model / WEIGHTS)
    write_meta(model, payload)


def load_fails(model: Path, *fragments: str) -> str:
    with pytest.raises(PosteriorLoadError) as info:
        ConditionalFlowPosterior.load(str(model))
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_intact_copy_loads(model):
    assert ConditionalFlowPosterior.load(str(model)).parameter_dim == 2


# -- weight file -------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", TRUNCATIONS)
def test_truncated_weights(model, keep):
    data = (model / WEIGHTS).read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    (model / WEIGHTS).write_bytes(data[:n])
    load_fails(model, str(model / WEIGHTS), "SHA-256 checksum mismatch")


def test_bit_flips_in_weights(model):
    path = model / WEIGHTS
    original = path.read_bytes()
    rng = random.Random(0)
    positions = [0, len(original) // 2, len(original) - 1] + [rng.randrange(len(original)) for _ in range(FLIPS - 3)]
    for position in positions:
        flipped = bytearray(original)
        flipped[position] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped))
        load_fails(model, str(path), "SHA-256 checksum mismatch", "corrupt or was modified")
    path.write_bytes(original)
    ConditionalFlowPosterior.load(str(model))


def test_missing_weights(model):
    (model / WEIGHTS).unlink()
    load_fails(model, str(model / WEIGHTS), "missing")


def test_weights_of_another_shape_with_matching_checksum(model):
    """metadata.json edited consistently (checksum updated) but weights for another width."""
    payload = meta(model)
    payload["estimator_config"]["hidden_dim"] = 16
    write_meta(model, payload)
    load_fails(model, str(model / WEIGHTS), "do not match the model rebuilt from metadata.json")


# -- metadata.json -----------------------------------------------------------------------------


def test_missing_metadata(model):
    (model / "metadata.json").unlink()
    load_fails(model, str(model / "metadata.json"), "missing")


@pytest.mark.parametrize("keep", (0, 1, 0.5, -1))
def test_truncated_metadata(model, keep):
    text = (model / "metadata.json").read_bytes()
    n = int(len(text) * keep) if isinstance(keep, float) else keep % len(text)
    (model / "metadata.json").write_bytes(text[:n])
    load_fails(model, str(model / "metadata.json"), "not valid JSON")


@pytest.mark.parametrize("edit", sorted(SILENT_EDITS))
def test_silent_metadata_edit_is_detected_by_the_sidecar(model, edit):
    """Edits that the weight checksums cannot see: the sidecar (metadata.json.sha256) does."""
    payload = meta(model)
    SILENT_EDITS[edit](payload)
    (model / "metadata.json").write_text(json.dumps(payload, indent=1))  # sidecar not resealed
    load_fails(model, str(model / "metadata.json"), "SHA-256 checksum mismatch", SIDECAR_NAME,
               "edited or corrupted after it was saved")


def test_bit_flips_in_metadata_are_detected(model):
    path = model / "metadata.json"
    original = path.read_bytes()
    rng = random.Random(1)
    for _ in range(METADATA_FLIPS):
        flipped = bytearray(original)
        flipped[rng.randrange(len(original))] ^= 1 << rng.randrange(7)  # stays ASCII
        path.write_bytes(bytes(flipped))
        # A flip inside a number or a string keeps valid JSON: only the sidecar can notice.
        message = load_fails(model, str(path))
        assert "SHA-256 checksum mismatch" in message or "not valid JSON" in message, message
    path.write_bytes(original)
    ConditionalFlowPosterior.load(str(model))


@pytest.mark.parametrize("damage", ["missing", "emptied", "other digest"])
def test_missing_or_damaged_sidecar(model, damage):
    sidecar = model / SIDECAR_NAME
    if damage == "missing":
        sidecar.unlink()
        load_fails(model, str(sidecar), "missing", "cannot be verified", "python -m sbi_core.metadata_checksum")
        return
    sidecar.write_text("" if damage == "emptied" else f"{'0' * 64}  metadata.json\n")
    load_fails(model, str(model / ("metadata.json" if damage == "other digest" else SIDECAR_NAME)),
               "checksum mismatch" if damage == "other digest" else "malformed")


def test_metadata_not_an_object_or_not_utf8(model):
    (model / "metadata.json").write_text("[1, 2]")
    load_fails(model, "metadata.json", "expected a JSON object")
    (model / "metadata.json").write_bytes(b"\xff\xfe{}")
    load_fails(model, "metadata.json", "not valid JSON")


@pytest.mark.parametrize("version", ["9.9.9", "0.1.0", None, 2])
def test_unknown_schema_version(model, version):
    payload = meta(model)
    if version is None:
        del payload["schema_version"]
    else:
        payload["schema_version"] = version
    write_meta(model, payload)
    load_fails(model, str(model / "metadata.json"), f"schema_version {version!r} is not supported")


def test_edited_checksum(model):
    payload = meta(model)
    payload["weights"]["files"][WEIGHTS]["sha256"] = "0" * 64
    write_meta(model, payload)
    load_fails(model, str(model / WEIGHTS), "checksum mismatch", "0" * 64)


@pytest.mark.parametrize("files", [None, {}, "weights.eqx", [WEIGHTS]])
def test_weight_list_missing_or_malformed(model, files):
    payload = meta(model)
    if files is None:
        del payload["weights"]
    else:
        payload["weights"] = {"files": files}
    write_meta(model, payload)
    load_fails(model, "metadata.json", "'weights.files' is missing or empty")


@pytest.mark.parametrize("name", ["unknown_class", "os", "subprocess.Popen"])
def test_unknown_estimator_class_is_not_imported(model, name):
    payload = meta(model)
    payload["estimator_class"] = name
    payload["estimator_module"] = "os"  # only sbi_core.* modules are ever imported
    write_meta(model, payload)
    load_fails(model, "metadata.json", f"unknown estimator_class {name!r}")


# -- paths outside the directory ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["../outside.eqx", "/etc/hostname", "sub/../../outside.eqx"])
def test_weight_path_outside_directory(model, name):
    outside = model.parent / "outside.eqx"
    shutil.copy(model / WEIGHTS, outside)
    payload = meta(model)
    record = payload["weights"]["files"].pop(WEIGHTS)
    payload["weights"]["files"][name] = {**record, "sha256": file_sha256(outside)}
    write_meta(model, payload)
    load_fails(model, repr(name), "points outside the posterior directory")


def test_weight_file_symlinked_outside(model):
    outside = model.parent / "outside.eqx"
    shutil.move(model / WEIGHTS, outside)
    os.symlink(outside, model / WEIGHTS)
    load_fails(model, repr(WEIGHTS), "points outside the posterior directory")


# -- pickles and other code-carrying files -----------------------------------------------------


def test_pickle_next_to_the_weights_is_refused_unread(model, tmp_path):
    marker = tmp_path / "PWNED"
    for suffix in (".pkl", ".pickle", ".joblib", ".dill", ".cloudpickle"):
        hostile_pickle(model / f"extra{suffix}", marker)
        load_fails(model, str(model / f"extra{suffix}"), "pickle file inside the posterior directory")
        (model / f"extra{suffix}").unlink()
    assert not marker.exists()


def test_pickle_as_the_weight_file_is_refused_unread(model, tmp_path):
    """A pickle under the weight file's name, with metadata.json's checksum updated to match."""
    marker = tmp_path / "PWNED"
    hostile_pickle(model / WEIGHTS, marker)
    record_weight_checksum(model)
    load_fails(model, str(model / WEIGHTS), "is a pickle file; refusing to load it")
    assert not marker.exists()


def test_protocol_0_pickle_as_the_weight_file_is_refused_unread(model, tmp_path):
    """Protocol 0 has no magic byte; the weight reader still never unpickles it."""
    marker = tmp_path / "PWNED"
    (model / WEIGHTS).write_bytes(pickle.dumps(Marker(marker), protocol=0))
    record_weight_checksum(model)
    load_fails(model, str(model / WEIGHTS), "weights do not match the model")
    assert not marker.exists()


def test_object_array_inside_the_weight_file_is_refused_unread(model, tmp_path):
    """An .npy record of dtype=object (a pickle inside numpy's format), checksum updated."""
    marker = tmp_path / "PWNED"
    buffer = io.BytesIO()
    np.save(buffer, np.array([Marker(marker)], dtype=object), allow_pickle=True)
    (model / WEIGHTS).write_bytes(buffer.getvalue() + (model / WEIGHTS).read_bytes())
    record_weight_checksum(model)
    load_fails(model, str(model / WEIGHTS), "weights do not match the model")
    assert not marker.exists()


def test_unlisted_pickle_under_another_name_is_never_read(model, tmp_path):
    """A pickle named like data (``notes.bin``) that metadata.json does not list is ignored: load
    succeeds and never opens it for deserialisation (the marker stays absent)."""
    marker = tmp_path / "PWNED"
    hostile_pickle(model / "notes.bin", marker)
    with zipfile.ZipFile(model / "bundle.zip", "w") as archive:
        archive.writestr("payload.pkl", pickle.dumps(Marker(marker)))
    loaded = ConditionalFlowPosterior.load(str(model))
    assert loaded.parameter_dim == 2 and not marker.exists()


def test_base_class_load_dispatch_refuses_the_same_damage(model):
    (model / WEIGHTS).write_bytes(b"")
    with pytest.raises(PosteriorLoadError, match="checksum mismatch"):
        PersistentPosteriorEstimator.load(str(model))


def test_pyfunc_load_context_refuses_a_corrupt_directory(model):
    """The MLflow pyfunc loads through the same checked ``load`` (flows/pyfunc_model.py)."""
    pytest.importorskip("mlflow")
    from types import SimpleNamespace

    from flows.pyfunc_model import POSTERIOR_ARTIFACT, SbiPosteriorModel

    data = bytearray((model / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0x10
    (model / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(PosteriorLoadError, match=r"weights\.eqx: SHA-256 checksum mismatch"):
        SbiPosteriorModel().load_context(SimpleNamespace(artifacts={POSTERIOR_ARTIFACT: str(model)}))
    data[len(data) // 2] ^= 0x10
    (model / WEIGHTS).write_bytes(bytes(data))  # weights intact again: now only metadata.json is edited
    payload = meta(model)
    payload["parameters"]["names"][0] = "renamed"
    (model / "metadata.json").write_text(json.dumps(payload))  # edited, sidecar not resealed
    with pytest.raises(PosteriorLoadError, match=r"metadata\.json: SHA-256 checksum mismatch"):
        SbiPosteriorModel().load_context(SimpleNamespace(artifacts={POSTERIOR_ARTIFACT: str(model)}))
