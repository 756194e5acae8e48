"""A job that prints, byte for byte, what a test put in the file ``$ECHO_STDOUT`` (train and eval alike), then
exits 0: for tests of what the service makes of anything a job may print. When ``$ECHO_STDOUT`` is a folder, each
trial prints its own file there, ``<run>.bin`` (the run named by the job's ``run=`` argument): one sweep then
tries many outputs."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    path = Path(os.environ["ECHO_STDOUT"])
    if path.is_dir():
        run = next(a.removeprefix("run=") for a in sys.argv[1:] if a.startswith("run="))
        path = path / f"{run}.bin"
    sys.stdout.buffer.write(path.read_bytes())
    sys.stdout.flush()
