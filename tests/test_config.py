from pathlib import Path

import pytest

from xelm import config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = config.load(path)
    assert cfg.out_dir.startswith("runs/")


def test_defaults_hold_the_contract_keys():
    cfg = config.load(None)
    for dotted in ("corpus.source", "corpus.path", "corpus.languages", "model.base", "seed.tokens",
                   "train.tokens", "allocate.method", "allocate.experts", "eval.methods",
                   "out_dir", "random_seed"):
        node = cfg
        for part in dotted.split("."):
            node = getattr(node, part)  # raises if the key is missing


def test_set_values_are_parsed_as_yaml():
    cfg = config.load(None, ["corpus.languages=[en, de]", "train.tokens=1000000",
                             "allocate.method=tfidf", "model.base=null"])
    assert cfg.corpus.languages == ["en", "de"]
    assert cfg.train.tokens == 1_000_000
    assert cfg.allocate.method == "tfidf"
    assert cfg.model.base is None


def test_out_dir_option_wins():
    assert config.load(None, ["out_dir=runs/a"], out_dir="runs/b").out_dir == "runs/b"


def test_unknown_key_suggests_the_closest():
    with pytest.raises(config.ConfigError, match=r"unknown config key 'train.tokns'.*Did you mean 'train.tokens'"):
        config.load(None, ["train.tokns=5"])


def test_unknown_section_suggests_the_closest():
    with pytest.raises(config.ConfigError, match=r"Did you mean 'allocate'"):
        config.load(None, ["alocate.experts=5"])


@pytest.mark.parametrize("override, message", [
    ("train.tokens=-5", "train.tokens"),
    ("train.tokens=lots", "train.tokens"),
    ("allocate.method=kmeans", "allocate.method"),
    ("model.hidden_size=30", "divisible"),
    ("corpus.source=dir", "corpus.path"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(None, [override])


def test_override_syntax_errors():
    with pytest.raises(config.ConfigError, match="dotted.key=value"):
        config.load(None, ["train.tokens"])
    with pytest.raises(config.ConfigError, match="train.tokens"):
        config.load(None, ["train.tokens.x=1"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(config.ConfigError, match="mapping"):
        config.load(bad)


def test_config_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, xelm.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _schema_keys(model, prefix=""):
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _schema_keys(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def test_config_show_lists_every_schema_key_with_help_and_loads_back(capsys):
    import yaml

    from xelm.cli import main
    from xelm.config import Config, from_dict, load

    demo = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    assert main(["config", "show", demo, "--set", "train.tokens=5M"]) == 0
    text = capsys.readouterr().out
    data = yaml.safe_load(text)
    assert from_dict(data) == load(demo, ["train.tokens=5000000"])
    lines = text.splitlines()
    for key, field in _schema_keys(Config):
        node = data
        for part in key.split("."):
            node = node[part]  # every key is there
        assert field.description, f"{key} has no help (a docstring under the field)"
        leaf = key.split(".")[-1]
        assert any(line.strip().startswith(f"{leaf}:") and field.description in line
                   for line in lines), key
    assert "tokens: 5000000  # " in text and "(default: 4000000)" in text


def test_counts_are_written_as_people_write_them():
    from xelm.config import ConfigError, load

    cfg = load(None, ["train.tokens=1e5", "seed.tokens=5M", "eval.max_tokens_per_language=500k",
                      "corpus.synthetic.bytes_per_language=1.5e6", "tokenizer.sample_bytes_per_language=2_000_000"])
    assert (cfg.train.tokens, cfg.seed.tokens, cfg.eval.max_tokens_per_language) == \
        (100_000, 5_000_000, 500_000)
    assert cfg.corpus.synthetic.bytes_per_language == 1_500_000
    assert cfg.tokenizer.sample_bytes_per_language == 2_000_000
    for bad in ("train.tokens=1.5", "train.tokens=lots", "train.tokens=-5M", "seed.tokens=0k"):
        with pytest.raises(ConfigError, match="tokens"):
            load(None, [bad])
    with pytest.raises(ConfigError, match=r"a list: write \[top1\]"):
        load(None, ["eval.methods=top1"])


def test_version(capsys):
    from xelm import __version__
    from xelm.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"xelm {__version__}"


def test_accumulation_must_split_the_seed_batch_too():
    from xelm.config import ConfigError, load

    with pytest.raises(ConfigError, match="seed.batch_size"):
        load(None, ["train.grad_accum_steps=4", "seed.batch_size=6", "train.batch_size=8"])
    assert load(None, ["train.grad_accum_steps=4", "seed.batch_size=8", "train.batch_size=8"])
