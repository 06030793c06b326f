"""Model cards, the hub upload plan, and the mergekit YAML, on the tiny run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from xelm.export.cards import expert_card, write_model_cards
from xelm.export.commands import export_run
from xelm.export.push import PushError, push_plan, push_run


@pytest.fixture
def run_with_export(run_copy):
    export_run(run_copy, None, shared="average")  # default out: RUN/exports/moe
    return run_copy


def test_cards_in_every_model_folder_and_weights_still_verify(run_with_export):
    from huggingface_hub import ModelCard

    from xelm.experts.manifest import ExpertSet

    run = run_with_export
    written = write_model_cards(run)
    assert sorted(p.relative_to(run).as_posix() for p in written) == [
        "dense/README.md", "experts/e0/README.md", "experts/e1/README.md",
        "experts/e2/README.md", "exports/moe/README.md"]
    card = ModelCard.load(run / "experts" / "e0" / "README.md")
    assert card.data.language == ["qa0", "qa1"] and "xelm" in card.data.tags
    text = card.text
    assert "an x-ELM expert for qa0, qa1" in text
    assert "[e1](../e1)" in text and "[e2](../e2)" in text and "[e0]" not in text
    assert "| qa0 | 8.00 | 9.00 | 10.00 |" in text  # top-1, dense, seed from results.json
    assert "parent: `seed`" in text and "1,000" in text
    assert 'from_pretrained("' + os.fspath(run.resolve() / "experts/e0") in text
    moe = (run / "exports" / "moe" / "README.md").read_text()
    assert "MixtralForCausalLM" in moe and "vLLM" in moe and "qa3" in moe
    ExpertSet.load(run)  # README.md beside the weights: every SHA-256 still matches


def test_cards_with_a_repo_link_to_the_hub_and_show_licences(run_copy):
    card = expert_card(run_copy, "e1", repo="org/xelm-tiny", licenses={"qa2": "CC0-1.0"})
    assert "https://huggingface.co/org/xelm-tiny/tree/main/experts/e0" in card.text
    assert 'from_pretrained("org/xelm-tiny", subfolder="experts/e1")' in card.text
    assert "| qa2 | CC0-1.0 |" in card.text
    with pytest.raises(ValueError, match="no expert 'e9'"):
        expert_card(run_copy, "e9")


def test_push_plan_layouts(run_with_export):
    run = run_with_export
    experts = {op.path_in_repo: op for op in push_plan(run, "experts", repo="org/x")}
    assert {"README.md", "xelm.json", "results.json", "data/tokenizer/tokenizer.json",
            "experts/e0/model.safetensors", "experts/e0/config.json",
            "experts/e2/README.md"} <= set(experts)
    assert not any(p.startswith(("dense/", "exports/")) or p.endswith((".bin", ".pt"))
                   or "/." in p or p == "config.yaml" for p in experts)
    assert b"qa3" in experts["README.md"].path_or_fileobj
    everything = [op.path_in_repo for op in push_plan(run, "all", repo="org/x")]
    assert "dense/model.safetensors" in everything
    assert "exports/moe/model.safetensors" in everything
    assert "exports/moe/export.json" in everything
    assert everything == sorted(everything)
    export = {op.path_in_repo for op in push_plan(run, "export", repo="org/x")}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md",
            "export.json"} <= export and not any("/" in p for p in export)


def test_pushed_layout_is_a_loadable_expert_set(run_with_export, tmp_path):
    """Materialise the plan as the hub would store it; xelm loads and verifies it."""
    from xelm.experts.manifest import ExpertSet

    repo = tmp_path / "repo"
    for op in push_plan(run_with_export, "all", repo="org/x"):
        target = repo / op.path_in_repo
        target.parent.mkdir(parents=True, exist_ok=True)
        source = op.path_or_fileobj
        target.write_bytes(source if isinstance(source, bytes) else open(source, "rb").read())
    assert ExpertSet.load(repo).names == ["e0", "e1", "e2"]


def test_push_dry_run_and_refusals(run_with_export, tiny_run):
    paths = push_run(run_with_export, "org/x", what="experts", dry_run=True)
    assert "experts/e1/model.safetensors" in paths
    with pytest.raises(PushError, match="ORG/NAME"):
        push_run(run_with_export, "just-a-name", dry_run=True)
    with pytest.raises(PushError, match="--what"):
        push_run(run_with_export, "org/x", what="weights", dry_run=True)
    with pytest.raises(PushError, match="no MoE export"):
        push_plan(tiny_run, "export")
    with pytest.raises(ValueError, match="xelm.json"):
        push_plan(tiny_run / "data", "experts")


def test_push_offline_fails_fast_with_one_clear_error(run_with_export):
    code = ("import sys\nfrom xelm.export.push import push_run\n"
            "try:\n    push_run(sys.argv[1], 'org/x', what='export')\n"
            "except ValueError as exc:\n    print('ERR', exc)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(run_with_export)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert time.perf_counter() - start < 60
    assert "ERR cannot upload" in out.stdout and "HF_HUB_OFFLINE" in out.stdout, out.stderr


def test_mergekit_yaml_follows_the_schema(run_copy, tmp_path):
    record = export_run(run_copy, tmp_path / "mk", fmt="mergekit")
    config = yaml.safe_load((tmp_path / "mk" / "mergekit.yaml").read_text())
    assert record["format"] == "mergekit" and record["experts"] == ["e0", "e1", "e2"]
    assert set(config) == {"base_model", "gate_mode", "dtype", "experts_per_token", "experts"}
    assert config["base_model"] == os.fspath(run_copy.resolve() / "seed")
    assert config["gate_mode"] == "hidden" and config["experts_per_token"] == 2
    prompts = [tuple(e["positive_prompts"]) for e in config["experts"]]
    assert [e["source_model"] for e in config["experts"]] == [
        os.fspath(run_copy.resolve() / "experts" / n) for n in ("e0", "e1", "e2")]
    assert all(prompts) and len(set(prompts)) == 3  # mergekit refuses identical prompts
    assert len(prompts[0]) == 8  # four documents of each of e0's two languages
    try:
        from mergekit.moe.config import MoEMergeConfig, is_bad_config
    except ImportError:
        return  # mergekit is optional; docs/export.md says how it was checked
    assert not is_bad_config(MoEMergeConfig.model_validate(config))
    with pytest.raises(ValueError, match="--tune-router applies to --format moe"):
        export_run(run_copy, tmp_path / "mk2", fmt="mergekit", tune_router_tokens=100)


def test_mergekit_merges_the_yaml_when_installed(run_copy, tmp_path):
    """mergekit is not a dependency: this runs only where it is installed (docs/export.md
    records the check with mergekit 0.1.5)."""
    pytest.importorskip("mergekit.moe.config")
    from transformers import AutoModelForCausalLM

    export_run(run_copy, tmp_path / "mk", fmt="mergekit")
    out = subprocess.run([sys.executable, "-m", "mergekit.scripts.moe",
                          str(tmp_path / "mk" / "mergekit.yaml"), str(tmp_path / "merged"),
                          "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), local_files_only=True)
    assert type(model).__name__ == "MixtralForCausalLM"
    assert model.config.num_local_experts == 3


def test_cli_export_push_and_the_out_guard(run_copy, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from xelm.cli import main

    out = tmp_path / "moe"
    assert main(["export", str(run_copy), "--out", str(out), "--shared", "average"]) == 0
    assert json.loads(capsys.readouterr().out)["shared"] == "average"
    assert type(AutoModelForCausalLM.from_pretrained(out)).__name__ == "MixtralForCausalLM"
    assert main(["export", str(run_copy), "--out", str(run_copy / "experts" / "e0"),
                 "--force"]) == 2  # never into a run's experts
    assert "never writes there" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: usage and one line
        main(["export", str(run_copy), "--tune-router", "lots"])
    assert exc.value.code == 2 and "is not a count" in capsys.readouterr().err
    assert main(["push", str(run_copy), "--repo", "org/name", "--what", "experts",
                 "--dry-run"]) == 0
    listed = capsys.readouterr().out.split()
    assert any(p.endswith("model.safetensors") for p in listed) and "xelm.json" in listed
