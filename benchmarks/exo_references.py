"""Reference retrievals of the exo acceptance run, cached as ``.npz`` (no pickle).

One file per case, ``references-<sampler>-<case>.npz``: the equally weighted draws plus the
:class:`~sbi_core.benchmark.reference.ReferenceRetrieval` scalars and metadata as JSON. A case is
written as soon as its retrieval finishes, so cases can run in parallel processes and a killed run
keeps what it finished.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from sbi_core.benchmark.reference import ReferenceRetrieval

_SCALARS = ("log_evidence", "log_evidence_error", "wall_time_s", "num_likelihood_calls", "nlive", "seed")


def reference_path(work: Path, sampler: str, case_name: str) -> Path:
    return work / f"references-{sampler}-{case_name}.npz"


def save_reference(path: Path, ref: ReferenceRetrieval, load_average: tuple[float, ...]) -> None:
    """Write one case atomically (temp file + rename): a killed write never leaves a torn file."""
    info = {**{k: getattr(ref, k) for k in _SCALARS}, "metadata": ref.metadata,
            "load_average_at_start": list(load_average)}
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, samples=ref.samples, info=np.array(json.dumps(info, default=str)))
    os.replace(tmp, path)


def load_references(work: Path, sampler: str) -> dict[str, dict[str, Any]]:
    """Case name -> ``{"reference", "load_average_at_start", "bounded_by_maxcall"}`` (the shape
    the acceptance report reads); ``bounded_by_maxcall`` is True for any unconverged run."""
    out = {}
    for path in sorted(work.glob(f"references-{sampler}-*.npz")):
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["info"]))
            samples = np.asarray(data["samples"])
        case = path.stem.removeprefix(f"references-{sampler}-")
        ref = ReferenceRetrieval(samples=samples, metadata=info["metadata"],
                                 **{k: info[k] for k in _SCALARS})
        out[case] = {"reference": ref, "load_average_at_start": tuple(info["load_average_at_start"]),
                     "bounded_by_maxcall": not info["metadata"].get("converged", False)}
    return out
