"""Item 1 (registration): register + promote SIGKILLed at random points on a real MLflow registry.

A sqlite MLflow registry starts with version 1 as champion. The scenario
(``registry_scenario.register``: the skip check, log the model artifacts into a run, register a
version, apply the promotion rule, i.e. ``flows.registry.register_and_promote``) registers a better
model. ``registry_driver`` imports MLflow once and forks one child per kill point, each on its
own copy of the registry; the child SIGKILLs itself at its N-th mutation (SQL write statement,
commit of a writing transaction, or file-system mutation under the data folder). Kill points:
one per seed, uniform over the uninterrupted run's mutations, plus every mutation from the
creation of the version on (registration and promotion, where an inconsistent registry could
arise).

After each kill: both aliases point at complete versions (READY, data/config/metric tags and the
promotion reason recorded, artifacts holding an MLmodel and a posterior whose checksums verify),
the champion is version 1 or the new version, version 1 is untouched. Then the registration is
run again in this process: the new model ends as champion and challenger, with the same tags as
in the uninterrupted run, exactly one version for its data and config (an interrupted
registration is resumed, not duplicated), and no version left without a promotion decision.

The whole module takes ~1-2 minutes on the shared 2-core machine (building the registry and the
pyfunc directory alone is ~30 s), hence ``slow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.reliability.helpers import REPO

pytestmark = pytest.mark.slow

SEEDS = tuple(range(8))
ALWAYS_FROM = "sql INSERT INTO model_versions"


@pytest.fixture(scope="module")
def crashes(saved_models, tmp_path_factory) -> dict:
    pytest.importorskip("mlflow")
    from flows.packaging import save_pyfunc
    from tests.reliability.registry_scenario import build_template

    base = tmp_path_factory.mktemp("registry-crash")
    save_pyfunc(saved_models["B"], base / "pyfunc")
    build_template(base / "template", base / "pyfunc")
    (base / "work").mkdir()
    spec = base / "spec.json"
    spec.write_text(json.dumps({"template": str(base / "template"), "pyfunc": str(base / "pyfunc"),
                                "workdir": str(base / "work"), "seeds": list(SEEDS),
                                "always_from": ALWAYS_FROM}))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), MLFLOW_DISABLE_TELEMETRY="true")
    result = subprocess.run([sys.executable, "-m", "tests.reliability.registry_driver", str(spec)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "pyfunc": base / "pyfunc"}


def new_versions(state: dict) -> list[int]:
    from tests.reliability.registry_scenario import MODELS

    return sorted(n for n, v in state["versions"].items() if v.tags.get("dataset_fingerprint") == MODELS["new"][0])


def test_uninterrupted_registration_promotes_the_better_model(crashes):
    from tests.reliability.registry_scenario import registry_state

    reference = crashes["reference"]
    assert not reference["killed"] and reference["exit"] == 0, reference
    assert any(e.startswith(ALWAYS_FROM) for e in reference["log"])
    state = registry_state(reference["dir"])
    assert state["problems"] == []
    assert state["aliases"] == {"champion": 2, "challenger": 2}
    assert state["versions"][2].tags["promotion.decision"] == "champion"
    assert "held-out NLL 0.5000 < champion v1's 1.0000" in state["versions"][2].tags["promotion.reason"]


def test_kill_9_during_registration_keeps_aliases_on_complete_versions_and_the_rerun_finishes(crashes):
    from flows.registry import DECISION_TAG
    from tests.reliability.registry_scenario import register, registry_state

    reference = registry_state(crashes["reference"]["dir"])["versions"][2]
    events = len(crashes["reference"]["log"])
    trials = crashes["trials"]
    assert len(trials) >= len(SEEDS) // 2 + 10, [t["kill_at"] for t in trials]
    outcomes = {"champion 1": 0, "champion 2": 0, "resumed": 0}
    for trial in trials:
        k = trial["kill_at"]
        assert trial["killed"], f"kill point {k}/{events}: exit {trial['exit']}"
        after = registry_state(trial["dir"])
        assert after["problems"] == [], f"kill point {k}: {after['problems']}"
        assert after["aliases"]["champion"] in (1, 2) and after["aliases"]["challenger"] in (1, 2), (k, after["aliases"])
        assert after["versions"][1].tags[DECISION_TAG] == "champion", k
        assert len(after["versions"]) <= 2, f"kill point {k}: versions {sorted(after['versions'])}"
        outcomes[f"champion {after['aliases']['champion']}"] += 1
        unfinished = [n for n in new_versions(after) if DECISION_TAG not in after["versions"][n].tags]

        done = register(trial["dir"], crashes["pyfunc"])
        final = registry_state(trial["dir"])
        assert final["problems"] == [], f"kill point {k}: {final['problems']}"
        assert new_versions(final) == [2], f"kill point {k}: versions {sorted(final['versions'])}"
        assert final["aliases"] == {"champion": 2, "challenger": 2}, f"kill point {k}: {final['aliases']}"
        assert all(DECISION_TAG in v.tags for v in final["versions"].values()), k
        assert final["versions"][2].tags == reference.tags, k  # data, config, metrics, decision, reason
        if done is not None:
            assert done.resumed == bool(unfinished), k
            outcomes["resumed"] += done.resumed
    # The sweep reached both sides of the champion switch and resumed interrupted registrations.
    assert outcomes["champion 1"] and outcomes["champion 2"] and outcomes["resumed"], outcomes
