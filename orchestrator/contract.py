"""Moved to orchestrator.core.contract; this path stays so existing imports keep working."""

import sys

from orchestrator.core import contract as _module

sys.modules[__name__] = _module
