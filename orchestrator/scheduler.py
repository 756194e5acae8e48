"""Moved to orchestrator.core.scheduler; this path stays so existing imports keep working."""

import sys

from orchestrator.core import scheduler as _module

sys.modules[__name__] = _module
