import hashlib
import os

import pytest

from xelm.experts.store import check_inside, load_causal_lm, sha256_file

from xelm_tiny import tiny_model


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()


def test_check_inside_accepts_relative_paths(tmp_path):
    assert check_inside(tmp_path, "experts/e0") == (tmp_path / "experts" / "e0").resolve()
    assert check_inside(tmp_path, "experts/../experts/e0") == (tmp_path / "experts/e0").resolve()


@pytest.mark.parametrize("bad", ["../elsewhere", "experts/../../x", "/etc", ""])
def test_check_inside_refuses_escapes(tmp_path, bad):
    with pytest.raises(ValueError, match="escapes|absolute|empty"):
        check_inside(tmp_path / "run", bad)


def test_check_inside_refuses_symlink_pointing_outside(tmp_path):
    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    (run / "experts").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="escapes"):
        check_inside(run, "experts/e0")


def test_load_causal_lm_round_trip(tmp_path):
    import torch

    model = tiny_model(seed=0)
    model.save_pretrained(tmp_path / "m")
    loaded = load_causal_lm(tmp_path / "m", dtype="float32")
    assert not loaded.training
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits, atol=1e-6)


def test_load_causal_lm_refuses_folder_without_safetensors(tmp_path):
    model = tiny_model(seed=0)
    model.save_pretrained(tmp_path / "m")
    for f in (tmp_path / "m").glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        load_causal_lm(tmp_path / "m")
    with pytest.raises(FileNotFoundError):
        load_causal_lm(tmp_path / "missing")
