"""The echo plugin's job wrapper: ``python wrapper.py JOB_DIR TIMEOUT -- ARGV...``, detached from the service.

It outlives the service, so it records the job's end even while the service is down: it runs ARGV with its
output in ``output.log``, stops it at TIMEOUT seconds (0: none; SIGTERM, then SIGKILL 5 s later), and writes
``exit.json`` (exit code, seconds, and why it failed when the output cannot say). Standard library only.
"""

import json
import os
import signal
import subprocess
import sys
import time


def write_atomic(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(data))
    os.replace(tmp, path)  # a reader sees the whole file or none


def main():
    job_dir, timeout, argv = sys.argv[1], float(sys.argv[2]), sys.argv[4:]
    t0 = time.time()
    with open(os.path.join(job_dir, "output.log"), "ab") as out:
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except OSError as exc:
            write_atomic(
                os.path.join(job_dir, "exit.json"),
                {"exit_code": 127, "duration": 0.0, "error": f"could not start the job: {exc}"},
            )
            return
    write_atomic(os.path.join(job_dir, "job.json"), {"pid": proc.pid, "started_at": t0})
    timed_out = False
    try:
        code = proc.wait(timeout=timeout or None)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    write_atomic(
        os.path.join(job_dir, "exit.json"),
        {"exit_code": code, "duration": time.time() - t0, "timed_out": timed_out, "timeout": timeout},
    )


if __name__ == "__main__":
    main()
