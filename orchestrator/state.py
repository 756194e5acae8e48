"""Moved to orchestrator.core.state; this path stays so existing imports keep working."""

import sys

from orchestrator.core import state as _module

sys.modules[__name__] = _module
