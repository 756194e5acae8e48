"""Moved to orchestrator.core.config; this path stays so existing imports keep working."""

import sys

from orchestrator.core import config as _module

sys.modules[__name__] = _module
