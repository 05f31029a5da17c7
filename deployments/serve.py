"""Serve the ``retrain`` flow with ``flow.serve`` (no work pool, no worker: one long process).

The simplest scheduled setup: a nightly cron and the ``sbi.dataset.updated`` trigger, run by this
process against a real Prefect server (``PREFECT_API_URL``). Usage, from the repository root::

    SBI_OPS_STORE=/srv/sbi/stores/latest.zarr python deployments/serve.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from prefect.events import DeploymentEventTrigger  # noqa: E402

from flows.retrain import DATASET_UPDATED_EVENT, retrain  # noqa: E402


def main() -> None:
    """Serve ``retrain`` nightly at 03:00 UTC and on every ``sbi.dataset.updated`` event."""
    store = os.environ.get("SBI_OPS_STORE")
    if not store:
        raise SystemExit("error: set SBI_OPS_STORE to the store the nightly retrain reads")
    options = {"store": store, "model_name": os.environ.get("SBI_OPS_MODEL_NAME", "sbi-posterior"),
               "if_data_changed": True}
    trigger = DeploymentEventTrigger(
        expect={DATASET_UPDATED_EVENT}, match={"prefect.resource.id": "sbi.store.*"},
        parameters={"options": {**options, "store": "{{ event.payload.store }}"}})
    retrain.serve(name="sbi-retrain-served", cron="0 3 * * *", parameters={"options": options},
                  triggers=[trigger], limit=1)


if __name__ == "__main__":
    main()
