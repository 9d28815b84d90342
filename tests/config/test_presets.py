"""model.kind presets resolve to concrete backbone / bottleneck / embedding_dim; defaults = today's models."""

from __future__ import annotations

import pytest

from ndvq.config import Config, ConfigError, config_to_dict, load_config, validate_config


@pytest.mark.parametrize("model, expected", [
    ({}, ("videogpt", "vq", 64)),
    ({"kind": "hierarchical"}, ("videogpt", "vq", 64)),
    ({"kind": "klvae"}, ("ldm", "gaussian", 4)),
    ({"kind": "klvae", "bottleneck": "vq"}, ("ldm", "vq", 64)),            # VQGAN-style
    ({"backbone": "ldm", "bottleneck": "fsq"}, ("ldm", "fsq", 64)),
    ({"bottleneck": "gaussian"}, ("videogpt", "gaussian", 4)),
    ({"kind": "klvae", "embedding_dim": 8}, ("ldm", "gaussian", 8)),
    ({"kind": "hierarchical", "bottleneck": "residual"}, ("videogpt", "residual", 64)),
])
def test_presets_resolve(model, expected):
    m = validate_config({"model": model}).model
    assert (m.backbone, m.bottleneck, m.embedding_dim) == expected
    dumped = config_to_dict(validate_config({"model": model}))["model"]
    assert (dumped["backbone"], dumped["bottleneck"], dumped["embedding_dim"]) == expected  # concrete in config.yaml


@pytest.mark.parametrize("model", [{"kind": "hierarchical", "backbone": "ldm"},
                                   {"kind": "hierarchical", "bottleneck": "gaussian"}])
def test_hierarchical_needs_videogpt_and_a_quantizer(model):
    with pytest.raises(ConfigError, match="model.kind=hierarchical needs model.backbone=videogpt and a quantizer"):
        validate_config({"model": model})


def test_ldm_backbone_ignores_videogpt_downsample_length():
    cfg = validate_config({"model": {"kind": "klvae", "n_dims": 3, "videogpt": {"downsample": [4, 4]}}})
    assert cfg.model.n_dims == 3
    with pytest.raises(ConfigError, match="model.videogpt.downsample needs 1 or n_dims=3 entries"):
        validate_config({"model": {"n_dims": 3, "videogpt": {"downsample": [4, 4]}}})


def test_ldm_num_res_blocks_per_level():
    cfg = validate_config({"model": {"kind": "klvae", "ldm": {"num_res_blocks": [1, 2, 3]}}})
    assert cfg.model.ldm.num_res_blocks == [1, 2, 3]
    with pytest.raises(ConfigError, match="num_res_blocks must be >= 0"):
        validate_config({"model": {"ldm": {"num_res_blocks": -1}}})


def test_schema_defaults_are_todays_models():
    m = Config().model
    v = m.videogpt
    assert (m.kind, m.n_dims, m.in_channels, m.out_channels, m.embedding_dim, m.n_codes) == ("vqvae", 2, "auto", None, 64, 512)
    assert (v.n_hiddens, v.num_res_blocks, v.downsample, v.n_head, v.attn_type, v.attn_dropout, v.dropout, v.norm,
            v.norm_num_groups) == (128, 2, [4, 4], 2, "axial", 0.0, 0.0, "channel", 32)
    assert (m.quantizer.beta, m.quantizer.ema_decay, m.quantizer.fsq_levels) == (None, 0.99, [8, 5, 5, 5])  # beta: the kind's
    kl = validate_config({"model": {"kind": "klvae"}})
    k = kl.model.ldm
    assert (kl.model.embedding_dim, k.channels, k.num_res_blocks, k.norm_num_groups, k.norm_eps) == (4, [64, 128, 256], 2, 32, 1e-6)
    assert (k.attention_levels, k.with_encoder_nonlocal_attn, k.with_decoder_nonlocal_attn) == ([False] * 3, True, True)
    loss = Config().loss
    assert (loss.recon_loss, loss.recon_weight, loss.kl_weight) == ("mse", 1.0, 1e-6)


def test_quickstart_model():
    m = load_config(None).model
    v = m.videogpt
    assert (m.backbone, m.bottleneck, m.embedding_dim, m.n_codes) == ("videogpt", "vq", 16, 128)
    assert (v.n_hiddens, v.num_res_blocks, v.downsample, v.n_head, v.norm) == (32, 1, [4, 4], 0, "channel")
