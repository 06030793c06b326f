"""``xelm.io`` helpers every stage shares."""

import io
import sys

from xelm.io import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_are_drawn_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # redirected: a file or a pipe
    with progress(range(3), desc="x") as bar:
        assert bar.disable and list(bar) == [0, 1, 2]
    assert sys.stderr.getvalue() == ""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress(range(3), desc="x", file=terminal) as bar:
        assert not bar.disable and list(bar) == [0, 1, 2]
    assert "\r" in terminal.getvalue()
    with progress(range(3), disable=True, file=terminal) as bar:  # the caller can still say no
        assert bar.disable
