"""Fixtures for tests/infer; the builders live in tests/experts/tiny_run.py."""

import importlib.util
import sys
from pathlib import Path

import pytest

if "xelm_tiny" not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        "xelm_tiny", Path(__file__).resolve().parents[1] / "experts" / "tiny_run.py")
    sys.modules["xelm_tiny"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["xelm_tiny"])

from xelm_tiny import make_run  # noqa: E402


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory with two random experts (languages qa0, qb0 -> e0; qa1, qb1 -> e1)."""
    make_run(tmp_path)
    return tmp_path
