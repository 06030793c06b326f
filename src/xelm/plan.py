"""Deprecated: ``xelm plan`` lives in :mod:`xelm.pipeline.plan` (issue 18). This alias keeps
``xelm.plan`` importable for code and long-running processes started before the move;
import from ``xelm.pipeline.plan`` (or ``xelm.train.budget`` for the regime threshold)."""

from __future__ import annotations

from xelm.pipeline.plan import format_plan, peak_memory_bytes, plan_run  # noqa: F401
from xelm.train.budget import REGIME_MIN_TOKENS_PER_PARAMETER  # noqa: F401
