"""``python -m orchestrator.run``: the recipe runner, the default job command (see orchestrator.core.runner).

The runner lives in orchestrator.core.runner so recipes depend on the core alone; this path stays because every
sweep's command template names it.
"""

import sys

from orchestrator.core import runner as _runner

if __name__ == "__main__":
    sys.exit(_runner.main())
sys.modules[__name__] = _runner
