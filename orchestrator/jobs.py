"""Moved to orchestrator.core.jobs; this path stays so existing imports keep working."""

import sys

from orchestrator.core import jobs as _module

sys.modules[__name__] = _module
