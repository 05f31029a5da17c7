"""Promotion under concurrency on a real MLflow sqlite registry (no training: versions are stubs)."""

from __future__ import annotations

import threading

import pytest

from flows.options import PromotionRule
from flows.registry import CHAMPION, alias_version, promote, version_tags

pytestmark = pytest.mark.integration


def test_two_concurrent_promotions_end_with_the_better_champion(service, tmp_path):
    # The session's registry (already migrated: a fresh sqlite DB costs ~15 s of migrations).
    client = service.client()
    name = "concurrent"
    client.create_registered_model(name)
    metrics = {"1": 1.0, "2": 0.9, "3": 0.8}
    for version, nll in metrics.items():
        tags = version_tags("f" * 64, "c" * 64, {"heldout_nll": nll, "calibration_error": 0.05})
        created = client.create_model_version(name, source=(tmp_path / f"m{version}").as_uri(), tags=tags)
        assert str(created.version) == version
    rule = PromotionRule()
    assert promote(service, name, "1", {"heldout_nll": 1.0, "calibration_error": 0.05}, rule, tmp_path).promote

    decisions = {}

    def run(version: str) -> None:
        decisions[version] = promote(service, name, version,
                                     {"heldout_nll": metrics[version], "calibration_error": 0.05},
                                     rule, tmp_path / "locks")

    for _ in range(3):  # whichever order the threads take, v3 (the best) must end as champion
        client.set_registered_model_alias(name, CHAMPION, "1")
        threads = [threading.Thread(target=run, args=(v,)) for v in ("2", "3")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert str(alias_version(client, name, CHAMPION).version) == "3"
        assert decisions["3"].promote
        # v2 is promoted only if it went first (then v3 was compared with v2, not v1).
        if decisions["2"].promote:
            assert decisions["3"].champion_version == "2"
        else:
            assert decisions["2"].champion_version == "3"
    tags = client.get_model_version(name, "3").tags
    assert tags["promotion.decision"] == "champion" and "0.8000" in tags["promotion.reason"]


def test_a_crash_between_register_and_promote_leaves_aliases_consistent(service, tmp_path):
    """A version registered but never promoted (process killed) is ignored by the skip check."""
    from flows.registry import CHALLENGER, find_version, register_version

    client = service.client()
    name = "crashy"
    client.create_registered_model(name)
    metrics = {"heldout_nll": 1.0, "calibration_error": 0.05}
    first = client.create_model_version(name, source=(tmp_path / "m1").as_uri(),
                                        tags=version_tags("a" * 64, "c" * 64, metrics))
    promote(service, name, str(first.version), metrics, PromotionRule(), tmp_path)
    orphan = register_version(service, (tmp_path / "m2").as_uri(), name,
                              version_tags("b" * 64, "c" * 64, metrics))
    # ... the process dies here, before promote(): the registry must still be consistent.
    assert str(alias_version(client, name, CHAMPION).version) == str(first.version)
    assert str(alias_version(client, name, CHALLENGER).version) == str(first.version)
    assert find_version(service, name, "b" * 64, "c" * 64) is None  # the next retrain registers again
    assert str(find_version(service, name, "a" * 64, "c" * 64).version) == str(first.version)
    assert str(orphan.version) == "2"
    # The next registration of the same data and config resumes the orphan instead of adding v3.
    from flows.registry import register_and_promote

    done = register_and_promote(service, name, version_tags("b" * 64, "c" * 64, metrics), metrics,
                                PromotionRule(), tmp_path, log_model=lambda: pytest.fail("logged again"))
    assert done.resumed and str(done.version.version) == "2" and not done.decision.promote
    assert str(alias_version(client, name, CHALLENGER).version) == "2"
    assert str(find_version(service, name, "b" * 64, "c" * 64).version) == "2"
