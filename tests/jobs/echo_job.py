"""A job that prints, byte for byte, what a test put in the file ``$ECHO_STDOUT`` (train and eval alike), then
exits 0: for tests of what the service makes of anything a job may print."""

import os
import sys

if __name__ == "__main__":
    with open(os.environ["ECHO_STDOUT"], "rb") as f:
        sys.stdout.buffer.write(f.read())
    sys.stdout.flush()
