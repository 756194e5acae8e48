"""Moved to orchestrator.core.events; this path stays so existing imports keep working."""

import sys

from orchestrator.core import events as _module

sys.modules[__name__] = _module
