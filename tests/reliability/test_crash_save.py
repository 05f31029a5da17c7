"""Item 1: ``PersistentPosteriorEstimator.save`` killed with SIGKILL at random points.

The subprocess loads model B and saves it over a directory holding model A, SIGKILLing itself
at its N-th file-system mutation (N random per seed, plus every rename, where a non-atomic swap
would leave the path empty). Afterwards the target must be exactly A or exactly B: it loads, its
checksums verify, and metadata and weights belong to the same model. Then a second save of B in
this process must remove whatever staging siblings (``.t<k>.tmp-*``, ``.t<k>.old-*``) the killed
save left: the kill right before the rename that moves the old model aside leaves a ``.tmp-``
directory, and a kill inside the removal of the old model leaves a ``.old-`` one.
"""

from __future__ import annotations

import json
import shutil

import pytest

from sbi_core.persistence import read_posterior_metadata
from sbi_core.posterior import ConditionalFlowPosterior
from sbi_core.posterior_base import POSTERIOR_METADATA_SCHEMA_VERSION
from tests.reliability.helpers import counting, kill_points, run_many, was_killed

FAST_SEEDS = (0, 1, 2)
FIRST_SAVE_SEEDS = (0,)
SLOW_SEEDS = tuple(range(3, 7))


def identity(directory) -> tuple[int, str]:
    """(seed from metadata.json, SHA-256 of the weights): one model's fingerprint."""
    meta = read_posterior_metadata(directory, (POSTERIOR_METADATA_SCHEMA_VERSION,))
    (record,) = meta["weights"]["files"].values()
    return meta["estimator_config"]["seed"], record["sha256"]


@pytest.fixture(scope="module")
def models(saved_models, tmp_path_factory):
    base = saved_models["base"]
    out = {name: identity(saved_models[name]) for name in ("A", "B")}
    assert out["A"] != out["B"]
    # Count the mutations of one save of B over A, and note which of them are renames.
    target, log = tmp_path_factory.mktemp("count") / "target", []
    shutil.copytree(base / "A", target)
    b = ConditionalFlowPosterior.load(str(base / "B"))
    with counting(target, log) as faults:
        b.save(str(target))
    renames = [i + 1 for i, e in enumerate(log) if e.split()[0] in ("rename", "replace")]
    # The first mutation after the last rename is the first removal inside the old model.
    out.update(base=base, events=faults.count(), renames=renames, removal=renames[-1] + 1, B_posterior=b)
    assert log[renames[-1]].split()[0] in ("unlink", "remove", "rmdir"), log[renames[-1]:]
    assert identity(target)[1] == out["B"][1]
    return out


def trials(tmp_path, models, points, existing: bool) -> list[str]:
    jobs = []
    for k in points:
        target = tmp_path / f"t{k}"
        if existing:
            shutil.copytree(models["base"] / "A", target)
        jobs.append((target, k, "save", models["base"] / "B"))
    seen = []
    for (target, k, *_), result in zip(jobs, run_many(jobs)):
        assert was_killed(result), f"kill point {k}: exit {result.returncode}\n{result.stderr[-2000:]}"
        if not existing and not target.exists():
            seen.append("absent")  # a first save killed before its rename: nothing was published
            continue
        who = identity(target)  # raises PosteriorLoadError on a mix or a torn file
        assert who in (models["A"], models["B"]) if existing else who == models["B"], f"kill point {k}: {who}"
        seen.append("A" if who == models["A"] else "B")
        loaded = ConditionalFlowPosterior.load(str(target))
        assert loaded.seed == who[0]
        visible = sorted(p.name for p in target.iterdir())
        assert visible == ["metadata.json", "metadata.json.sha256", "weights.eqx"], f"kill point {k}: {visible}"
    return seen


def staging(target) -> list[str]:
    return sorted(p.name for p in target.parent.glob(f".{target.name}.*"))


def resave_cleans_up(tmp_path, models, points) -> dict[str, int]:
    """Save B again over every trial's target: the dead save's staging siblings must go."""
    left = {"tmp": 0, "old": 0}
    for k in points:
        target = tmp_path / f"t{k}"
        for name in staging(target):
            left[name.split(".")[2].split("-")[0]] += 1
        models["B_posterior"].save(str(target))
        assert staging(target) == [], f"kill point {k}: {staging(target)} left after the next save"
        assert identity(target)[1] == models["B"][1]
    return left


def test_kill_9_during_save_leaves_old_or_new_model_and_the_next_save_cleans_up(tmp_path, models):
    points = kill_points(models["events"], FAST_SEEDS, always=[*models["renames"], models["removal"]])
    seen = trials(tmp_path, models, points, existing=True)
    assert set(seen) <= {"A", "B"} and len(seen) == len(points)
    left = resave_cleans_up(tmp_path, models, points)
    assert left["tmp"] >= 1 and left["old"] >= 1, left  # both kinds of leftover were exercised


def test_kill_9_during_first_save_leaves_nothing_or_the_model(tmp_path, models):
    points = kill_points(models["events"], FIRST_SAVE_SEEDS)
    assert set(trials(tmp_path, models, points, existing=False)) <= {"absent", "B"}
    resave_cleans_up(tmp_path, models, points)


@pytest.mark.slow
def test_kill_9_during_save_sweep(tmp_path, models):
    """More random points plus the last five mutations (metadata write, swap, removal of the old model)."""
    total = models["events"]
    points = kill_points(total, SLOW_SEEDS, always=range(max(1, total - 4), total + 1))
    seen = trials(tmp_path, models, points, existing=True)
    assert {"A", "B"} <= set(seen)
    resave_cleans_up(tmp_path, models, points)
