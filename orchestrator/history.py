"""Moved to orchestrator.core.history; this path stays so existing imports keep working."""

import sys

from orchestrator.core import history as _module

sys.modules[__name__] = _module
