"""Config loading: files (YAML/TOML/JSON), key=value overrides, one-line errors with suggestions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ndvq.config import (
    QUICKSTART,
    Config,
    ConfigError,
    all_keys,
    config_to_yaml,
    load_config,
    parse_overrides,
)

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_parse_yaml_values():
    cfg = load_config(None, ["model.n_codes=1024", "train.learning_rate=3e-4", "model.videogpt.downsample=[2,2]",
                             "train.grad_clip=null", "data.crop=random", "model.quantizer.cosine=true"])
    assert cfg.model.n_codes == 1024 and cfg.train.learning_rate == pytest.approx(3e-4)
    assert cfg.model.videogpt.downsample == [2, 2] and cfg.train.grad_clip is None
    assert cfg.data.crop == "random" and cfg.model.quantizer.cosine is True


@pytest.mark.parametrize("override, key, suggestion", [
    ("train.learnin_rate=1e-3", "train.learning_rate", "train.learning_rate"),
    ("train.n_codes=64", "train.n_codes", "model.n_codes"),          # right name, wrong section
    ("n_codes=64", "n_codes", "model.n_codes"),                        # no section
    ("model.quantizer.levls=[8,8]", "model.quantizer.levls", "model.quantizer.fsq_levels"),  # old name's typo
    ("model.quantizer.fsq_levls=[8,8]", "model.quantizer.fsq_levls", "model.quantizer.fsq_levels"),
    ("model.n_res_layer=1", "model.n_res_layer", "model.videogpt.num_res_blocks"),  # typo of an old name
    ("train.codebook_beta=0.5", "train.codebook_beta", "model.quantizer.beta"),    # old name, wrong section
    ("model.klvae.chanels=[8]", "model.klvae.chanels", "model.ldm.channels"),
    ("modle.n_codes=64", "modle.n_codes", "model.n_codes"),
])
def test_unknown_key_names_key_and_suggests(override, key, suggestion):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert f"'{key}'" in msg and f"did you mean '{suggestion}'" in msg and "\n" not in msg


def test_unknown_key_in_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  n_code: 64\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'model.n_code'; did you mean 'model.n_codes'"):
        load_config(p)


@pytest.mark.parametrize("override, pieces", [
    ("train.learning_rate=5", ["train.learning_rate=5", "0 < value <= 1"]),
    ("train.batch_size=0", ["train.batch_size=0", "1 <= value"]),
    ("train.batch_size=abc", ["train.batch_size='abc'", "valid integer"]),
    ("train.lr_schedule=linear", ["train.lr_schedule='linear'", "'constant', 'cosine' or 'cyclic'"]),
    ("model.quantizer.quantizer_dropout=1.5", ["model.quantizer.quantizer_dropout=1.5", "0 <= value <= 1"]),
    ("model.videogpt.downsample=[3,3]", ["model.videogpt.downsample", "powers of two"]),
    ("model.downsample=[3,3]", ["model.videogpt.downsample", "powers of two"]),  # old name: the error names the new
    ("model.videogpt.n_head=3", ["model.videogpt.n_hiddens (32) must be divisible by model.videogpt.n_head (3)"]),
    ("model.videogpt.downsample=[2,2,2]", ["model.videogpt.downsample needs 1 or n_dims=2 entries, got 3"]),
    ("model.ldm.num_res_blocks=[1,2]", ["num_res_blocks needs one entry per entry of channels (3)"]),
    ("model.ldm.norm_num_groups=48", ["norm_num_groups (48) must divide every entry of channels"]),
    ("model.bottleneck=gauss", ["model.bottleneck='gauss'", "'gaussian'"]),
    ("loss.recon_weight=0", ["loss.recon_weight=0", "0 < value"]),
    ("model.quantizer.restart_share=1.5", ["model.quantizer.restart_share=1.5", "0 < value <= 1"]),
    ("model.quantizer.restart_sampling=random", ["model.quantizer.restart_sampling='random'", "'error' or 'uniform'"]),
    ("model.quantizer.ema_tokens_per_code=-1", ["model.quantizer.ema_tokens_per_code=-1", "0 <= value"]),
    ("train.weight_ema=1", ["train.weight_ema=1", "0 < value < 1"]),
])
def test_bad_value_names_key_and_range(override, pieces):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert "\n" not in msg
    for piece in pieces:
        assert piece in msg, msg


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.max_steps"])


@pytest.mark.parametrize("suffix", [".yaml", ".toml", ".json"])
def test_file_formats_agree(tmp_path, suffix):
    data = {"model": {"n_codes": 64, "videogpt": {"downsample": [2, 2]}}, "train": {"learning_rate": 0.002, "max_steps": 7}}
    p = tmp_path / f"c{suffix}"
    if suffix == ".yaml":
        p.write_text(yaml.safe_dump(data))
    elif suffix == ".json":
        p.write_text(json.dumps(data))
    else:
        p.write_text("[model]\nn_codes = 64\n[model.videogpt]\ndownsample = [2, 2]\n"
                     "[train]\nlearning_rate = 0.002\nmax_steps = 7\n")
    cfg = load_config(p, ["train.max_steps=9"])
    got = (cfg.model.n_codes, cfg.model.videogpt.downsample, cfg.train.learning_rate, cfg.train.max_steps)
    assert got == (64, [2, 2], 0.002, 9)


@pytest.mark.parametrize("text, match", [
    ("model: [unclosed", "cannot read config"),
    ("- a\n- b\n", "must hold a mapping"),
])
def test_unreadable_config(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_default_yaml_is_the_builtin_default():
    assert load_config(ROOT / "configs" / "default.yaml") == load_config(None) == Config.model_validate(QUICKSTART)


def test_samples_yaml_trains_the_default_model_on_the_default_data():
    # it once named group norm: 13.9-15.2 dB on the whole unseen photograph against 21.3-22.2 (channel norm)
    samples, default = load_config(ROOT / "configs" / "samples.yaml"), load_config(None)
    assert (samples.model, samples.data) == (default.model, default.data)


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_config(None, ["model.kind=hierarchical", "data.root=/tmp/x", "train.precision=bf16-mixed"])
    p = tmp_path / "config.yaml"
    p.write_text(config_to_yaml(cfg))
    assert load_config(p) == cfg
    assert set(all_keys()) >= {"model.bottleneck", "model.quantizer.beta", "train.learning_rate", "data.root",
                               "run.name"}


def test_every_example_config_loads_with_new_names_only(capsys):
    files = sorted(p for p in (ROOT / "configs").rglob("*") if p.is_file())
    assert {p.name for p in files} >= {"default.yaml", "example.yaml", "vqgan.yaml", "vae_config.json"}
    for p in files:
        if p.suffix == ".json":  # the medical example names a data folder that does not exist here
            from ndvq.config.medical import load_medical

            load_medical(p, check_paths=False)
        elif p.name == "prior.yaml":  # the code prior's own config (ndvq prior -c)
            from ndvq.prior.config import load_prior_config

            load_prior_config(p)
        else:
            load_config(p)
    assert capsys.readouterr().err == ""  # no deprecation note: the examples use the new key names
    vqgan = load_config(ROOT / "configs" / "image" / "vqgan.yaml")
    assert (vqgan.model.backbone, vqgan.model.bottleneck) == ("ldm", "vq")
    assert vqgan.loss.perceptual_weight > 0 and vqgan.loss.adversarial_weight > 0


def test_docs_key_table_matches_schema():
    from ndvq.config import schema_markdown

    text = (ROOT / "docs" / "training.md").read_text()
    table = text.split("<!-- KEYS:BEGIN -->\n")[1].split("<!-- KEYS:END -->")[0].strip()
    assert table == schema_markdown().strip(), (
        "docs/training.md is out of date with the schema; regenerate the table between the KEYS markers with "
        "ndvq.config.schema_markdown()")


def test_weight_average_is_refused_with_sharded_parameters():
    with pytest.raises(ConfigError, match="train.weight_ema=0.99 needs whole parameters .* train.strategy=fsdp"):
        load_config(None, ["train.weight_ema=0.99", "train.strategy=fsdp"])
    assert load_config(None, ["train.weight_ema=0.99", "train.strategy=ddp"]).train.weight_ema == 0.99
    # the default average (not named by the user) is off under fsdp instead of refusing a config that never set it
    assert load_config(None, ["train.strategy=fsdp"]).train.weight_ema is None
    assert load_config(None, []).train.weight_ema == 0.99
