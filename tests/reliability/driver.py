"""Subprocess entry point of the crash tests: run one scenario with a SIGKILL armed.

    python -m tests.reliability.driver ROOT KILL_AT SCENARIO ARGS...

``ROOT`` is the path whose file-system mutations are counted (see :mod:`faults`); the process
SIGKILLs itself at mutation number ``KILL_AT`` (0 = never), or right after the scenario if it made fewer mutations than that.
It prints ``EVENTS <n>`` when the scenario finishes.

Scenarios:
    simulate CLI_ARGS...               ``sbi-ops simulate CLI_ARGS``
    save SOURCE_MODEL                  load SOURCE_MODEL and ``save`` it onto ROOT
    train BACKEND EPOCHS [SLEEP_S]     SBITrainer on a tiny regression, checkpoints in ROOT
"""

from __future__ import annotations

import os
import signal
import sys
import time


def main(argv: list[str]) -> int:
    root, kill_at, scenario, args = argv[0], int(argv[1]), argv[2], argv[3:]
    from tests.reliability import faults

    if scenario == "simulate":
        from sbi_ops.cli import app

        faults.install(root, kill_at)
        app(["simulate", *args], standalone_mode=False)
    elif scenario == "save":
        from sbi_core.posterior import ConditionalFlowPosterior

        posterior = ConditionalFlowPosterior.load(args[0])
        faults.install(root, kill_at)
        posterior.save(root)
    elif scenario == "train":
        from tests.reliability import training_toy

        training_toy.use_compilation_cache()
        sleep = float(args[2]) if len(args) > 2 else 0.0
        callback = (lambda epoch, metrics: time.sleep(sleep)) if sleep else None
        faults.install(root, kill_at)
        training_toy.fit(root, backend=args[0], epochs=int(args[1]), resume=False, callback=callback)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    print(f"EVENTS {faults.count()}", flush=True)
    if kill_at > faults.count():
        # This run made fewer mutations than the counting run: the kill lands after the last one.
        os.kill(os.getpid(), signal.SIGKILL)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.exit(main(sys.argv[1:]))
