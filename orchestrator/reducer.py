"""Moved to orchestrator.core.reducer; this path stays so existing imports keep working."""

import sys

from orchestrator.core import reducer as _module

sys.modules[__name__] = _module
