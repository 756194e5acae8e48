"""A job for the early-stopping tests: a train job that reports a learning curve, trial n rising as step / n (so
trial 1 is best at every step), and an eval job that reports the curve's end. Records starts, ends and SIGTERMs
in the ledger file. ``CURVE_STEPS`` steps of ``CURVE_STEP_SECONDS`` each; ``CURVE_BAD_REPORTS=1`` also prints
reports that break the contract's rules."""

import json
import os
import signal
import sys
import time


def main() -> int:
    entry = sys.argv[1]
    key = os.environ.get("SWEEP_JOB_KEY", "?")
    trial = int(os.environ["SWEEP_RUN"].rsplit("_", 1)[1])
    steps = int(os.environ.get("CURVE_STEPS", "20"))
    ledger = os.environ["LEDGER"]

    def note(what: str) -> None:
        with open(ledger, "a") as f:
            f.write(f"{what} {key} {os.getpid()}\n")

    def on_term(*_: object) -> None:
        note("term")
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)
    note("start")
    if entry.endswith("evaluate"):
        print("SWEEP_RESULT " + json.dumps({"score": steps / trial}), flush=True)
    else:
        for step in range(1, steps + 1):
            time.sleep(float(os.environ.get("CURVE_STEP_SECONDS", "0.25")))
            if os.environ.get("CURVE_BAD_REPORTS") and step == 2:
                print("SWEEP_REPORT {not json", flush=True)
                print('SWEEP_REPORT {"step": 1, "score": 5.0}', flush=True)  # not above the last step (1)
                print('SWEEP_REPORT {"score": 5.0}', flush=True)
                print('SWEEP_REPORT {"step": 1.5, "score": NaN}', flush=True)
            print("SWEEP_REPORT " + json.dumps({"step": step, "score": step / trial, "loss": 1.0 / step}), flush=True)
    note("end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
