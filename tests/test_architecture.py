"""The architecture contract (``.importlinter``, the picture of ../shared/DESIGN.md's layers):
``cli -> pipeline -> report -> evaluate -> infer -> train/allocate -> experts -> data ->
config/io``, no import cycles inside any package, and no module using another's private name."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "xelm"


def _lint_imports() -> str:
    beside = Path(sys.executable).with_name("lint-imports")
    exe = str(beside) if beside.is_file() else shutil.which("lint-imports")
    assert exe, "lint-imports not found: install the test extra (pip install -e '.[test]')"
    return exe


def test_the_import_contract_is_kept():
    out = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout and "BROKEN" not in out.stdout, out.stdout


def test_the_contract_names_every_top_level_module():
    """A new module or package must be placed in a layer (else the contract says nothing
    about it)."""
    text = (ROOT / ".importlinter").read_text(encoding="utf-8")
    layers = text.split("layers =", 1)[1].split("[importlinter:", 1)[0]
    named = {part.strip() for line in layers.splitlines() if not line.strip().startswith("#")
             for part in line.replace(":", "|").split("|") if part.strip()}
    top = {p.stem for p in SRC.iterdir()
           if (p.suffix == ".py" or (p / "__init__.py").is_file())
           and p.stem not in ("__init__", "__main__")}
    assert top - named == set(), f"put these in a layer of .importlinter: {sorted(top - named)}"


def _module(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined_private_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        for target in targets:
            for n in ast.walk(target):
                if isinstance(n, ast.Name):
                    names.add(n.id)
                elif isinstance(n, ast.Attribute):
                    names.add(n.attr)
    return {n for n in names if _private(n)}


def private_name_uses(src: Path = SRC) -> list[str]:
    """``from xelm.x import _name``, and ``obj._name`` where ``_name`` is defined in another
    module of the package only (``self``/``cls`` attributes are a class's own)."""
    trees = {_module(p, src): ast.parse(p.read_text(encoding="utf-8"))
             for p in sorted(src.rglob("*.py"))}
    defined = {m: _defined_private_names(t) for m, t in trees.items()}
    found = []
    for m, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("xelm"):
                found += [f"{m}:{node.lineno}: from {node.module} import {a.name}"
                          for a in node.names if _private(a.name)]
            elif (isinstance(node, ast.Attribute) and _private(node.attr)
                  and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                owners = [o for o, names in defined.items() if node.attr in names]
                if owners and m not in owners:
                    found.append(f"{m}:{node.lineno}: {ast.unparse(node)} "
                                 f"(private to {', '.join(owners)})")
    return found


def test_no_module_uses_another_modules_private_names():
    assert private_name_uses() == []


def test_the_private_name_check_finds_both_kinds(tmp_path):
    pkg = tmp_path / "xelm"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "one.py").write_text("def _helper():\n    pass\n\n\nclass Run:\n"
                                      "    def _log(self):\n        self._log()\n")
    (pkg / "two.py").write_text("from xelm.a.one import _helper\nfrom xelm.a import one\n\n\n"
                                "def f(rd):\n    one._helper()\n    rd._log()\n")
    found = private_name_uses(pkg)
    assert [f.split(": ", 1)[1] for f in found] == [
        "from xelm.a.one import _helper", "one._helper (private to xelm.a.one)",
        "rd._log (private to xelm.a.one)"]
    assert all(f.startswith("xelm.two:") for f in found)
