"""Moved to orchestrator.core.failures; this path stays so existing imports keep working."""

import sys

from orchestrator.core import failures as _module

sys.modules[__name__] = _module
