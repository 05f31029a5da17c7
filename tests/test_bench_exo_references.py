"""The exo acceptance run's reference cache: npz round trip, no pickle, atomic per case."""

import numpy as np

from benchmarks.exo_references import load_references, reference_path, save_reference
from sbi_core.benchmark.reference import ReferenceRetrieval


def _ref(converged: bool) -> ReferenceRetrieval:
    return ReferenceRetrieval(samples=np.arange(12.0).reshape(4, 3), log_evidence=-1300.5, log_evidence_error=0.01,
                              wall_time_s=12.5, num_likelihood_calls=40_000, nlive=2000, seed=0,
                              metadata={"sampler": "nautilus.Sampler", "converged": converged})


def test_round_trip_keeps_draws_scalars_and_convergence(tmp_path):
    save_reference(reference_path(tmp_path, "nautilus", "test-23"), _ref(True), (1.0, 2.0, 3.0))
    save_reference(reference_path(tmp_path, "nautilus", "test-26"), _ref(False), (4.0, 5.0, 6.0))
    refs = load_references(tmp_path, "nautilus")
    assert sorted(refs) == ["test-23", "test-26"]
    ref = refs["test-23"]["reference"]
    np.testing.assert_array_equal(ref.samples, _ref(True).samples)
    assert (ref.log_evidence, ref.num_likelihood_calls, ref.nlive) == (-1300.5, 40_000, 2000)
    assert refs["test-23"]["bounded_by_maxcall"] is False and refs["test-26"]["bounded_by_maxcall"] is True
    assert refs["test-26"]["load_average_at_start"] == (4.0, 5.0, 6.0)
    assert not list(tmp_path.glob(".*.tmp"))  # no staging file left behind
    assert load_references(tmp_path, "dynesty") == {}
