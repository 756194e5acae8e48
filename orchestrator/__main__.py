import os
import sys

from orchestrator.cli import main


def _broken_pipe(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_broken_pipe(e) for e in exc.exceptions)
    return isinstance(exc, BrokenPipeError)


try:
    code = main()
except BaseException as exc:
    if not _broken_pipe(exc):
        raise
    # Whoever read our output stopped (``status | head -1``): end quietly, as a Unix filter does, with the exit
    # status of a SIGPIPE; stdout goes to /dev/null so the interpreter's last flush cannot complain either.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 128 + 13
sys.exit(code)
