"""Old config key names keep working: renamed with one note per key, never shown in a dumped config."""

from __future__ import annotations

import pytest
import yaml

from ndvq.config import (
    ConfigError,
    all_keys,
    config_to_dict,
    config_to_yaml,
    load_config,
    validate_config,
)
from ndvq.config.aliases import ALIASES, rename_keys


def _leaves(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out |= _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return out


def _notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("ndvq: config key")]


def test_alias_table_maps_old_names_to_schema_keys():
    keys = set(all_keys())
    assert not set(ALIASES) & keys, "an old name is still a schema key"
    assert set(ALIASES.values()) <= keys, sorted(set(ALIASES.values()) - keys)


# old override -> (new dotted key, value given, value expected there)
OLD_OVERRIDES = [
    ("model.n_hiddens", "model.videogpt.n_hiddens", 64),
    ("model.n_res_layers", "model.videogpt.num_res_blocks", 3),
    ("model.downsample", "model.videogpt.downsample", [2, 2]),
    ("model.n_head", "model.videogpt.n_head", 4),
    ("model.attn_type", "model.videogpt.attn_type", "full"),
    ("model.attn_dropout", "model.videogpt.attn_dropout", 0.1),
    ("model.dropout", "model.videogpt.dropout", 0.2),
    ("model.norm", "model.videogpt.norm", "batch"),
    ("model.num_groups", "model.videogpt.norm_num_groups", 4),
    ("model.codebook_beta", "model.quantizer.beta", 0.5),
    ("model.ema_decay", "model.quantizer.ema_decay", 0.9),
    ("model.quantizer.kind", "model.bottleneck", "fsq"),
    ("model.quantizer.levels", "model.quantizer.fsq_levels", [8, 8]),
    ("model.klvae.latent_channels", "model.embedding_dim", 8),
    ("model.klvae.channels", "model.ldm.channels", [32, 64, 64]),
    ("model.klvae.num_res_blocks", "model.ldm.num_res_blocks", 1),
    ("model.klvae.norm_num_groups", "model.ldm.norm_num_groups", 16),
    ("model.klvae.norm_eps", "model.ldm.norm_eps", 1e-5),
    ("model.klvae.attention_levels", "model.ldm.attention_levels", [False, False, True]),
    ("model.klvae.with_encoder_nonlocal_attn", "model.ldm.with_encoder_nonlocal_attn", False),
    ("model.klvae.with_decoder_nonlocal_attn", "model.ldm.with_decoder_nonlocal_attn", False),
    ("model.recon_loss", "loss.recon_loss", "l1"),
    ("model.recon_loss_factor", "loss.recon_weight", 2.0),
]


def _at(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


@pytest.mark.parametrize("old, new, value", OLD_OVERRIDES)
def test_old_override_sets_new_key_with_one_note(old, new, value, capsys):
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    cfg = load_config(None, [f"{old}={text}"])
    assert _at(cfg, new) == value
    assert _notes(capsys.readouterr().err) == [f"ndvq: config key {old!r} is now {new!r}"]


def test_every_old_key_is_covered():
    assert {old for old, _, _ in OLD_OVERRIDES} == set(ALIASES)


def test_old_names_in_a_file_and_overrides(tmp_path, capsys):
    p = tmp_path / "old.yaml"
    p.write_text("model:\n  n_hiddens: 64\n  n_res_layers: 1\n  num_groups: 8\n  norm: group\n"
                 "  codebook_beta: 0.5\n  recon_loss: l1\n  quantizer: {kind: lfq, levels: [4, 4]}\n")
    cfg = load_config(p, ["model.n_hiddens=32", "model.videogpt.num_res_blocks=2"])
    v = cfg.model.videogpt
    assert (v.n_hiddens, v.num_res_blocks, v.norm_num_groups, v.norm) == (32, 2, 8, "group")  # overrides win
    assert (cfg.model.bottleneck, cfg.model.quantizer.fsq_levels, cfg.model.quantizer.beta) == ("lfq", [4, 4], 0.5)
    assert cfg.loss.recon_loss == "l1"
    notes = _notes(capsys.readouterr().err)
    assert len(notes) == len(set(notes)) == 8  # one per old key, model.n_hiddens (file + override) only once
    assert "ndvq: config key 'model.quantizer.kind' is now 'model.bottleneck'" in notes


def test_quantizer_kind_lfq_maps_to_bottleneck():
    cfg = load_config(None, ["model.quantizer.kind=lfq"])
    assert cfg.model.bottleneck == "lfq" and cfg.model.backbone == "videogpt"
    assert "kind" not in config_to_dict(cfg)["model"]["quantizer"]


def test_dump_shows_only_new_names():
    cfg = load_config(None, ["model.n_res_layers=1", "model.klvae.channels=[32,64,64]", "model.recon_loss_factor=2"])
    dumped = yaml.safe_load(config_to_yaml(cfg))
    assert _leaves(dumped) == set(all_keys())
    assert load_config(None, [], base=dumped) == cfg


def _old_dump(kind: str) -> dict:
    """A complete config.yaml as the previous version wrote it (every key, old names)."""
    return {
        "model": {"kind": kind, "n_dims": 2, "in_channels": 1, "out_channels": None, "n_hiddens": 64,
                  "n_res_layers": 1, "downsample": [4, 4], "embedding_dim": 32, "n_codes": 256,
                  "codebook_beta": 0.3, "recon_loss_factor": 1.0, "recon_loss": "l1", "n_head": 0,
                  "attn_type": "axial", "attn_dropout": 0.0, "dropout": 0.0, "norm": "group", "num_groups": 8,
                  "ema_decay": 0.99, "quantizer": {"kind": "vq", "levels": [8, 5, 5, 5], "cosine": True},
                  "top": {"downsample": [2, 2], "n_codes": None, "embedding_dim": None},
                  "klvae": {"latent_channels": 4, "channels": [32, 64], "num_res_blocks": 1, "norm_num_groups": 8,
                            "norm_eps": 1e-6, "attention_levels": [False, False],
                            "with_encoder_nonlocal_attn": True, "with_decoder_nonlocal_attn": True}},
        "loss": {"kl_weight": 1e-6, "perceptual_weight": 0.0},
        "train": {"max_steps": 10},
    }


def test_old_vqvae_run_config_loads(capsys):
    cfg = validate_config(_old_dump("vqvae"))
    m = cfg.model
    assert (m.backbone, m.bottleneck, m.embedding_dim) == ("videogpt", "vq", 32)  # latent_channels: klvae only
    assert (m.videogpt.n_hiddens, m.videogpt.num_res_blocks, m.quantizer.beta, cfg.loss.recon_loss) == (64, 1, 0.3, "l1")
    assert m.ldm.channels == [32, 64]
    err = capsys.readouterr().err
    assert "'model.klvae.latent_channels' is now 'model.embedding_dim' (ignored here: model.kind is 'vqvae')" in err


def test_old_klvae_run_config_loads(capsys):
    cfg = validate_config(_old_dump("klvae"))
    m = cfg.model
    assert (m.backbone, m.bottleneck, m.embedding_dim) == ("ldm", "gaussian", 4)  # quantizer.kind: not for klvae
    assert m.ldm.channels == [32, 64] and m.ldm.norm_num_groups == 8
    assert "'model.quantizer.kind' is now 'model.bottleneck' (ignored here: model.kind is 'klvae')" in capsys.readouterr().err


def test_old_and_new_name_both_set():
    with pytest.raises(ConfigError, match=r"config keys 'model.n_hiddens' \(old name\) and "
                                          r"'model.videogpt.n_hiddens' are both set, to 64 and 32"):
        validate_config({"model": {"n_hiddens": 64, "videogpt": {"n_hiddens": 32}}})
    cfg = validate_config({"model": {"n_hiddens": 64, "videogpt": {"n_hiddens": 64}}})  # same value: fine
    assert cfg.model.videogpt.n_hiddens == 64


def test_rename_keys_leaves_input_alone_and_drops_emptied_sections():
    data = {"model": {"klvae": {"channels": [8]}, "quantizer": {"kind": "fsq"}}}
    notes: list[str] = []
    out = rename_keys(data, notes)
    assert out == {"model": {"ldm": {"channels": [8]}, "bottleneck": "fsq"}}
    assert data == {"model": {"klvae": {"channels": [8]}, "quantizer": {"kind": "fsq"}}}
    assert len(notes) == 2


def test_docs_list_every_renamed_key():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    for old, new in ALIASES.items():
        assert f"| `{old}` | `{new}` |" in text, old
