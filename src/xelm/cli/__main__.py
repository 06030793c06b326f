"""``python -m xelm.cli``: the same as ``xelm``."""

from xelm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
