"""The core install runs the default pipeline; a missing extra is one line naming it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from xelm_testing import tiny_args

from xelm.cli import main

# Runs the tiny pipeline with every optional dependency made unimportable.
BLOCKED = textwrap.dedent("""
    import sys
    OPTIONAL = ("lm_eval", "matplotlib", "tensorboard", "lingua", "ray", "submitit")

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in OPTIONAL:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    import importlib.util
    _find_spec = importlib.util.find_spec
    # as for an absent package: find_spec says None, import raises ModuleNotFoundError
    importlib.util.find_spec = lambda name, package=None: (
        None if name.split(".")[0] in OPTIONAL else _find_spec(name, package))
    from xelm.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_the_default_pipeline_runs_without_any_extra(tmp_path):
    out = tmp_path / "run"
    args = [*tiny_args(out, "eval.methods=[top1, ensemble_posterior]")]
    done = subprocess.run([sys.executable, "-c", BLOCKED, "run", *args], capture_output=True,
                          text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "pip install 'xelm[plots]'" in report and "## Allocation" in report
    assert "xelm[tensorboard]" in done.stderr  # said once, then curves go to the log only
    for verb in (["lm-eval", "--model", "xelm"], ["eval", *args, "--downstream"]):
        failed = subprocess.run([sys.executable, "-c", BLOCKED, *verb], capture_output=True,
                                text=True, timeout=300)
        assert failed.returncode == 2 and "pip install 'xelm[eval]'" in failed.stderr, failed.stderr


def test_a_missing_extra_is_named_before_anything_is_created(tmp_path, capsys, monkeypatch):
    import xelm.extras

    monkeypatch.setattr(xelm.extras, "installed", lambda module: module != "lingua")
    out = tmp_path / "run"
    assert main(["run", *tiny_args(out, "corpus.source=dir", f"corpus.path={tmp_path}",
                                   "eval.methods=[top1, top1_langid]")]) == 2
    assert "pip install 'xelm[langid]'" in capsys.readouterr().err
    assert not out.exists()
