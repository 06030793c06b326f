"""Every command in the README and docs/ is one that runs: each `xelm` verb and flag, each
bench script and its flags, each make target exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands(page: Path) -> list[str]:
    """The shell lines of a page's ```sh / ```bash blocks, continuations joined."""
    text = page.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                out += [part.strip() for part in re.split(r"&&|;|\$\(|\)", line) if part.strip()]
    return out


def _subparsers():
    from xelm.cli.parser import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.choices and "run" in a.choices)
    return parser, action.choices


def _options(parser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}


def _check_xelm(words: list[str], where: str) -> None:
    parser, verbs = _subparsers()
    words = [w.strip("[]") for w in words]
    while words and words[0].startswith("-"):
        assert words[0] in _options(parser), f"{where}: xelm has no option {words[0]}"
        words = words[1:]
    if not words:
        return
    for verb in words[0].split("|"):  # `xelm prepare|seed|... CONFIG`
        assert verb in verbs, f"{where}: xelm has no verb {verb!r}"
        sub = verbs[verb]
        if verb == "lm-eval":
            continue  # every argument goes to lm-eval itself
        if verb in ("tasks", "config"):
            inner = next(a for a in sub._actions if a.choices)
            assert words[1] in inner.choices, f"{where}: xelm {verb} has no {words[1]!r}"
            sub = inner.choices[words[1]]
        for word in words[1:]:
            flag = word.split("=")[0]
            if flag.startswith("--"):
                assert flag in _options(sub), f"{where}: `xelm {verb}` has no option {flag}"


def _check(command: str, where: str) -> None:
    words = command.replace('"', " ").replace("'", " ").split()
    if words[:3] == ["python", "-m", "xelm"] or words[:3] == ["python3", "-m", "xelm"]:
        words = ["xelm", *words[3:]]
    if words[0] == "xelm":
        _check_xelm(words[1:], where)
    elif words[0] in ("python", "python3") and words[1].startswith("bench/"):
        script = ROOT / words[1]
        assert script.is_file(), f"{where}: no {words[1]}"
        source = script.read_text(encoding="utf-8")
        for word in words[2:]:
            flag = word.split("=")[0]
            if flag.startswith("--"):
                assert f'"{flag}"' in source, f"{where}: {words[1]} has no option {flag}"
    elif words[0] == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
        for target in words[1:]:
            if not target.startswith("-") and "=" not in target:
                assert target in targets, f"{where}: the Makefile has no target {target}"
    elif words[0] == "accelerate" and "-m" in words:
        module = words[words.index("-m") + 1]
        if module == "xelm":
            _check_xelm(words[words.index("-m") + 2:], where)
        else:
            assert module.startswith("xelm."), module
            import importlib.util

            assert importlib.util.find_spec(module), f"{where}: no module {module}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_command_in_the_docs_exists(page):
    commands = _commands(page)
    for command in commands:
        _check(command, f"{page.relative_to(ROOT)}: {command}")


def test_the_readme_starts_with_the_two_commands_and_stays_short():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first = _commands(ROOT / "README.md")[:2]
    assert first == ["make demo", "make test"], first
    assert len(text.splitlines()) < 250
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in text, f"the README does not link {page.name}"


def test_the_checker_catches_a_wrong_flag():
    with pytest.raises(AssertionError, match="no option --nope"):
        _check("xelm run configs/demo.yaml --nope", "here")
    with pytest.raises(AssertionError, match="no verb"):
        _check("xelm trian configs/demo.yaml", "here")
