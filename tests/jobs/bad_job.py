"""A job that misbehaves in ways a real program does, for tests/test_faulty_jobs.py.

Called as the sweep's command template: ``python tests/jobs/bad_job.py <module.entry> --args ... --overrides ...``.
``BAD_JOB_MODE`` picks the misbehaviour and ``BAD_JOB_KIND`` (``train`` or ``eval``, default ``train``) the job
it applies to; the other kind behaves (train writes nothing, eval reports score 1.0).

- ``silent``: exits with code 5 before printing anything (as a crash in native code would)
- ``garbage``: prints undecodable bytes, control characters, a 200 kB line and lines that only look like a
  result, then exits 0 without a SWEEP_RESULT line
- ``not_an_object``: prints ``SWEEP_RESULT [1, 2]`` (valid JSON, but not an object) and exits 0
"""

import os
import sys


def main() -> int:
    entry = sys.argv[1]
    kind = "eval" if entry.endswith("evaluate") else "train"
    mode = os.environ.get("BAD_JOB_MODE", "") if os.environ.get("BAD_JOB_KIND", "train") == kind else ""
    if mode == "silent":
        os._exit(5)
    if mode == "garbage":
        out = sys.stdout.buffer
        out.write(b"\xff\xfe\x00\x9c garbage \x1b[31m red \r\n")
        out.write(b"x" * 200_000 + b"\n")
        out.write(b"SWEEP_RESULTS are overrated\n")
        out.write(b"score: 0.93\n")
        out.write(b"\x00\x01\x02 trailing bytes without a newline")
        out.flush()
        return 0
    if mode == "not_an_object":
        print("SWEEP_RESULT [1, 2]", flush=True)
        return 0
    if kind == "eval":
        print('SWEEP_RESULT {"score": 1.0}', flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
