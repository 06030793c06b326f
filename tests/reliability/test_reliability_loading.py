"""Loading untrusted files: safetensors only, no remote code, nothing outside the run dir.

Two kinds of test: scans of the source (every weight load goes through safetensors, no
pickle, ``trust_remote_code`` off unless the user sets it) and loads of tampered folders.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
from pathlib import Path

import pytest
from xelm_tiny import make_run, tiny_model, tiny_tokenizer

SRC = Path(__file__).resolve().parents[2] / "src" / "xelm"
MODULES = sorted(SRC.rglob("*.py"))


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _where(path: Path, call: ast.Call) -> str:
    return f"{path.relative_to(SRC.parent)}:{call.lineno}"


# --------------------------------------------------------------------------- source scans
def test_the_scan_sees_the_package():
    names = {p.name for p in MODULES}
    assert {"store.py", "checkpoint.py", "loop.py", "manifest.py"} <= names
    assert sum(1 for p in MODULES for c in _calls(p) if _dotted(c.func).endswith("from_pretrained")) >= 4


def test_no_pickle_loads_anywhere():
    """``pickle``/``torch.load`` run code from the file; numpy only with allow_pickle off."""
    bad = []
    for path in MODULES:
        for call in _calls(path):
            name = _dotted(call.func)
            if name in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load",
                        "joblib.load", "marshal.load", "marshal.loads", "yaml.load",
                        "yaml.unsafe_load", "pd.read_pickle", "pandas.read_pickle"):
                bad.append(f"{_where(path, call)} {name}")
            elif name.endswith("torch.load") and not _is_const(_keyword(call, "weights_only"), True):
                bad.append(f"{_where(path, call)} {name} without weights_only=True")
            elif name in ("np.load", "numpy.load") and \
                    _keyword(call, "allow_pickle") is not None and \
                    not _is_const(_keyword(call, "allow_pickle"), False):
                bad.append(f"{_where(path, call)} {name} with allow_pickle")
    assert not bad, "unsafe deserialisation:\n" + "\n".join(bad)


def test_every_model_load_asks_for_safetensors():
    """``*Model*.from_pretrained`` without ``use_safetensors=True`` falls back to a .bin."""
    bad = [_where(p, c) for p in MODULES for c in _calls(p)
           if _dotted(c.func).endswith(".from_pretrained") and "Model" in _dotted(c.func)
           and not _is_const(_keyword(c, "use_safetensors"), True)]
    assert not bad, "model loads that may unpickle a .bin: " + ", ".join(bad)


def test_trust_remote_code_is_never_switched_on_by_xelm():
    """Passed only as ``False`` or as a variable whose default is False (the user's choice)."""
    bad = []
    for path in MODULES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code" \
                    and isinstance(node.value, ast.Constant) and node.value.value is not False:
                bad.append(f"{path.name}: trust_remote_code={node.value.value!r}")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.args + node.args.kwonlyargs
                defaults = ([None] * (len(node.args.args) - len(node.args.defaults))
                            + node.args.defaults + node.args.kw_defaults)
                for arg, default in zip(args, defaults):
                    if arg.arg == "trust_remote_code" and not _is_const(default, False):
                        bad.append(f"{path.name}:{node.lineno} {node.name}() default "
                                   f"{ast.unparse(default) if default else '(none)'}")
            if isinstance(node, ast.AnnAssign) and _dotted(node.target) == "trust_remote_code" \
                    and not _is_const(node.value, False):
                bad.append(f"{path.name}:{node.lineno} field default not False")
    assert not bad, "\n".join(bad)


def test_trust_remote_code_defaults_are_false_at_runtime():
    from xelm import config
    from xelm.data.tokenizer import import_tokenizer
    from xelm.experts.store import load_causal_lm

    assert config.load(None).model.trust_remote_code is False
    for fn in (import_tokenizer, load_causal_lm):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False


# --------------------------------------------------------------------------- .bin folders
@pytest.fixture
def bin_only_folder(tmp_path: Path, monkeypatch) -> Path:
    """A model folder whose weights are only a pickled ``pytorch_model.bin``; any
    ``torch.load`` from here on fails the test."""
    import torch

    folder = tmp_path / "binmodel"
    model = tiny_model(0)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    tiny_tokenizer().save_pretrained(folder)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on an untrusted folder")

    monkeypatch.setattr(torch, "load", no_unpickling)
    return folder


def test_bin_only_folder_is_refused_by_the_loader(bin_only_folder):
    from xelm.experts.store import load_causal_lm

    with pytest.raises(ValueError, match=r"no \*\.safetensors weights.*pytorch_model\.bin"):
        load_causal_lm(bin_only_folder)


def test_bin_only_base_model_is_refused_by_the_seed_stage(bin_only_folder, tmp_path):
    from xelm import config
    from xelm.rundir import RunDir
    from xelm.pipeline.seed import seed

    cfg = config.load(None, [f"model.base={bin_only_folder}"], out_dir=str(tmp_path / "run"))
    rd = RunDir.open(cfg)
    with pytest.raises(ValueError, match="safetensors"):
        seed(cfg, rd)
    assert not rd.seed.exists() or not list(rd.seed.iterdir())


# --------------------------------------------------------------------------- weight files
@pytest.mark.parametrize("damage", ["truncate", "zero-header", "empty"])
def test_damaged_weight_file_is_refused_with_its_name(run_dir, damage):
    from xelm.experts.manifest import ExpertSet, ManifestError
    from xelm.experts.store import load_causal_lm

    weights = run_dir / "experts" / "e1" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncate": data[: len(data) // 2], "zero-header": b"\0" * 8 + data[8:],
                         "empty": b""}[damage])
    with pytest.raises(ManifestError, match="experts/e1/model.safetensors does not match"):
        ExpertSet.load(run_dir)
    # without the manifest's hashes (seed and dense in the eval stage; verify=False)
    with pytest.raises(ValueError, match="experts/e1.*truncated or corrupt"):
        ExpertSet.load(run_dir, verify=False)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_causal_lm(run_dir / "experts" / "e1")


# --------------------------------------------------------------------------- manifest paths
def _point_expert_at(run: Path, path: str) -> None:
    manifest = run / "xelm.json"
    data = json.loads(manifest.read_text())
    data["experts"][0]["path"] = path
    manifest.write_text(json.dumps(data))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlinked-folder", "symlink-in-path"])
def test_manifest_path_outside_the_run_dir_is_refused(tmp_path, kind):
    from xelm.experts.manifest import ExpertSet

    run = tmp_path / "deep" / "run"
    make_run(run)
    outside = tmp_path / "outside"
    tiny_model(5).save_pretrained(outside)  # a loadable model: only the path check stops it
    if kind == "dotdot":
        _point_expert_at(run, "experts/../../../outside")
    elif kind == "absolute":
        _point_expert_at(run, str(outside))
    elif kind == "symlinked-folder":
        (run / "experts" / "evil").symlink_to(outside, target_is_directory=True)
        _point_expert_at(run, "experts/evil")
    else:
        (run / "link").symlink_to(tmp_path, target_is_directory=True)
        _point_expert_at(run, "link/outside")
    message = "absolute" if kind == "absolute" else "escapes the run directory"
    for verify in (True, False):
        with pytest.raises(ValueError, match=message):
            ExpertSet.load(run, verify=verify)


def test_manifest_writer_refuses_paths_outside_the_run_dir(tmp_path):
    from xelm.experts.manifest import write_manifest

    run = tmp_path / "run"
    make_run(run)
    before = (run / "xelm.json").read_bytes()
    tiny_model(5).save_pretrained(tmp_path / "outside")
    for path in ("../outside", str(tmp_path / "outside")):
        with pytest.raises(ValueError, match="absolute|escapes"):
            write_manifest(run, [{"name": "x", "path": path, "languages": ["en"]}],
                           "data/tokenizer")
    assert (run / "xelm.json").read_bytes() == before
    assert not list(run.glob(".xelm.json.*"))


# --------------------------------------------------------------------------- tokenizers
def _other_tokenizer(folder: Path) -> None:
    """Same vocabulary size as the run's, different ids: the dangerous case."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<unk>": 0, **{f"w{i}": 64 - i for i in range(1, 64)}}
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(folder)


def _give_experts_the_run_tokenizer(run: Path) -> None:
    for name in ("e0", "e1"):
        tiny_tokenizer().save_pretrained(run / "experts" / name)


def test_expert_trained_with_another_tokenizer_is_refused(tmp_path):
    from xelm.experts.manifest import (
        ExpertSet,
        ManifestError,
        read_manifest,
        write_manifest,
    )

    run = tmp_path / "run"
    make_run(run)
    _give_experts_the_run_tokenizer(run)
    specs = read_manifest(run)["experts"]
    write_manifest(run, specs, "data/tokenizer")
    assert len(ExpertSet.load(run)) == 2  # the same tokenizer everywhere loads
    before = (run / "xelm.json").read_bytes()
    _other_tokenizer(run / "experts" / "e1")
    with pytest.raises(ManifestError, match="'e1' was trained with another tokenizer"):
        write_manifest(run, specs, "data/tokenizer")
    assert (run / "xelm.json").read_bytes() == before
    with pytest.raises(ManifestError, match="'e1' was trained with another tokenizer"):
        ExpertSet.load(run)


def test_symlinked_tokenizer_file_outside_is_refused(tmp_path):
    from xelm.experts.manifest import ExpertSet

    run = tmp_path / "run"
    make_run(run)
    _give_experts_the_run_tokenizer(run)
    outside = tmp_path / "tok"
    _other_tokenizer(outside)
    own = run / "experts" / "e0" / "tokenizer.json"
    own.unlink()
    os.symlink(outside / "tokenizer.json", own)
    with pytest.raises(ValueError, match="escapes the run directory"):
        ExpertSet.load(run)
