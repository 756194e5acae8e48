"""Moved to orchestrator.core.subscriber; this path stays so existing imports keep working."""

import sys

from orchestrator.core import subscriber as _module

sys.modules[__name__] = _module
