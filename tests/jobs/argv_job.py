"""A job that records exactly the argv it received (one JSON line per job in ``$ARGV_LOG``), then behaves:
train reports nothing, eval reports score 1.0. For the shell-injection tests: whatever a parameter holds must
arrive here as the same inert string.

Called as the sweep's command template: ``python tests/jobs/argv_job.py <module.entry> --args ... --overrides ...``.
"""

import json
import os
import sys


def main() -> int:
    with open(os.environ["ARGV_LOG"], "a") as f:
        f.write(json.dumps({"key": os.environ.get("SWEEP_JOB_KEY"), "argv": sys.argv[1:]}) + "\n")
    if sys.argv[1].endswith("evaluate"):
        print('SWEEP_RESULT {"score": 1.0}', flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
