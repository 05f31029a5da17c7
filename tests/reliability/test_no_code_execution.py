"""Item 2: no pickle or other code-executing deserializer on the load path.

Two proofs:

1. At run time: every unpickling entry point (``pickle``/``_pickle`` load/loads/Unpickler,
   ``dill``/``cloudpickle``/``joblib`` loads when installed, ``yaml.load``/``unsafe_load``) is
   replaced by a function that fails the test, and ``numpy.load`` (which ``jax.numpy.load`` and
   equinox's deserialiser call) is wrapped to fail if ever asked for ``allow_pickle=True``.
   Under those patches a saved posterior is loaded and sampled (and converted to physical units),
   and a training run is resumed from equinox and orbax checkpoints.
2. Statically: no module of ``sbi_core`` (nor ``sbi-ops sample``) imports a pickle-family
   module or calls ``eval``/``exec``/``compile``/``__import__``, and none passes
   ``allow_pickle=True``.
"""

from __future__ import annotations

import _pickle
import ast
import importlib
import pickle
from pathlib import Path

import numpy as np
import pytest

from sbi_core.observation import ObservationBlock
from sbi_core.posterior import ConditionalFlowPosterior
from tests.reliability import training_toy
from tests.reliability.helpers import REPO

FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "copyreg"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


class Unpickled(AssertionError):
    pass


def patch_unpickling(monkeypatch) -> list:
    """Make every unpickling entry point fail; returns the ``allow_pickle`` of each numpy.load."""

    def forbidden(*args, **kwargs):
        raise Unpickled("a code-executing deserializer was called on the load path")

    for module in (pickle, _pickle):
        for name in ("load", "loads", "Unpickler"):
            monkeypatch.setattr(module, name, forbidden)
    for module_name in ("dill", "cloudpickle", "joblib"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in ("load", "loads"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, forbidden)
    try:
        import yaml

        monkeypatch.setattr(yaml, "load", forbidden)
        monkeypatch.setattr(yaml, "unsafe_load", forbidden)
    except ImportError:
        pass
    calls = []
    real_load = np.load

    def checked_load(*args, allow_pickle=False, **kwargs):
        calls.append(allow_pickle)
        if allow_pickle:
            raise Unpickled("numpy.load(allow_pickle=True) on the load path")
        return real_load(*args, allow_pickle=False, **kwargs)

    monkeypatch.setattr(np, "load", checked_load)
    return calls


@pytest.fixture
def no_unpickling(monkeypatch):
    return patch_unpickling(monkeypatch)


def test_load_and_sample_never_unpickle(saved_models, no_unpickling):
    loaded = ConditionalFlowPosterior.load(str(saved_models["A"]))
    assert no_unpickling and not any(no_unpickling)  # weights were read, all with allow_pickle=False
    encoded = loaded.encode_observation([ObservationBlock(name="x", modality="auxiliary", values=np.array([0.1, -0.2]))])
    draws = loaded.to_physical(loaded.sample_posterior(encoded, n_samples=16, seed=0))
    assert np.isfinite(draws.samples).all()


@pytest.mark.parametrize("backend", ["equinox", "orbax"])
def test_checkpoint_restore_never_unpickles(tmp_path, backend, monkeypatch):
    first = training_toy.fit(tmp_path, backend=backend, epochs=2, resume=False)
    calls = patch_unpickling(monkeypatch)
    again = training_toy.fit(tmp_path, backend=backend, epochs=2, resume=True)  # restores, then finishes
    assert again.resumed_from_epoch == 2 and again.best_validation_loss == first.best_validation_loss
    assert not any(calls)


def _library_files() -> list[Path]:
    files = sorted((REPO / "sbi_core").rglob("*.py"))
    return files + [REPO / "sbi_ops" / "commands" / "sample.py"]


def test_library_has_no_code_executing_deserializer():
    problems = []
    files = _library_files()
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            problems += [f"{path}:{node.lineno}: imports {n}" for n in names if n in FORBIDDEN_MODULES]
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                    problems.append(f"{path}:{node.lineno}: calls {func.id}()")
                for keyword in node.keywords:
                    if keyword.arg == "allow_pickle" and not (isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                        problems.append(f"{path}:{node.lineno}: allow_pickle={ast.unparse(keyword.value)}")
    assert len(files) > 20
    assert problems == []
