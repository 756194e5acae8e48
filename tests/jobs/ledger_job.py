"""A job for the service's tests: records every start and end in a ledger file, so tests can check that each
job key ran exactly once, then behaves like a tiny train or eval job (progress lines, a SWEEP_RESULT line).

Called as the sweep's command template: ``python tests/jobs/ledger_job.py <module.entry> --args ... --overrides ...``.
"""

import json
import os
import sys
import time


def main() -> int:
    entry, rest = sys.argv[1], sys.argv[2:]
    values = dict(a.split("=", 1) for a in rest if "=" in a)
    key = os.environ.get("SWEEP_JOB_KEY", "?")
    ledger = os.environ["LEDGER"]
    with open(ledger, "a") as f:
        f.write(f"start {key} {os.getpid()}\n")
    seconds = float(os.environ.get("JOB_SECONDS", "0.5"))
    steps = 4
    for i in range(steps):
        time.sleep(seconds / steps)
        print(f"Epoch {i + 1} / 1000 sps / {100 * (i + 1) / steps:.2f}% of 4.00 ksteps", flush=True)
    if os.environ.get("FAIL_KEY") == key:
        print("simulated failure", file=sys.stderr, flush=True)
        return 3
    if entry.endswith("evaluate"):
        run = values["run"]
        params = json.load(open(os.path.join("train_dir", run, "checkpoints", "params.json")))
        x = float(params.get("toy.x", 0.0))
        print("SWEEP_RESULT " + json.dumps({"score": -((x - 0.3) ** 2), "metrics": {"x": x}}), flush=True)
    else:
        ckpt = os.path.join("train_dir", values["run"], "checkpoints")
        os.makedirs(ckpt, exist_ok=True)
        json.dump(values, open(os.path.join(ckpt, "params.json"), "w"))
    with open(ledger, "a") as f:
        f.write(f"end {key}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
