"""bench/gpu_check.py's CPU side: every part of the GPU check runs in its smoke mode."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_unknown_part_is_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_check().main(["--smoke", "--parts", "train,tpu"])
    assert "unknown part(s) ['tpu']" in capsys.readouterr().err


@pytest.mark.slow
def test_the_smoke_run_exercises_every_part(tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu_check().main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["ok"] is True and report["parts_done"] == 5
    parts = report["results"]
    train = parts["train"]
    assert train["steps"] == 24 and train["tokens_per_s"] > 0 and train["mfu"] is None
    assert train["loss_last"] < train["loss_first_interval"]
    assert parts["fsdp"]["sharding"] == "fsdp" and parts["fsdp"]["processes"] == 1
    assert "skipped" in parts["ddp"]                       # no 2 GPUs here
    ensemble = parts["ensemble"]
    assert ensemble["experts"] == 4 and set(ensemble["tokens_per_s"]) == {
        "one_model", "top1", "ensemble", "ensemble_posterior"}
    assert parts["generate"]["shapes"]["ensemble_posterior"] == [2, 32 + 8]
    assert parts["generate"]["ok"] is True                 # top-1 = the expert's generate()
