"""Every backbone x bottleneck pair in 1D, 2D and 3D: trains 2 steps, saves, reloads, round-trips through
encode/decode, and reports facts (codebook_sizes, downsample, latent_shape, code_shapes) that match the
tensors it produces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ndvq import load_pretrained
from ndvq.errors import ConfigError
from ndvq.models import Autoencoder, AutoencoderOutput, GaussianLatent, HierarchicalAutoencoder

BACKBONES = {
    "videogpt": {"n_hiddens": 16, "num_res_blocks": 1, "downsample": 2, "norm": "group", "norm_num_groups": 4},
    "ldm": {"channels": [8, 16], "num_res_blocks": 1, "norm_num_groups": 4, "attention_levels": [False, True]},
}
BOTTLENECKS = {"vq": {}, "residual": {"num_quantizers": 2, "cosine": False}, "grouped": {"groups": 2}, "fsq": {"fsq_levels": [4, 4]},
               "lfq": {}, "simvq": {}, "gaussian": {}}
SPATIAL = {1: (16,), 2: (8, 8), 3: (4, 4, 4)}


def build(backbone: str, bottleneck: str, n_dims: int) -> Autoencoder:
    return Autoencoder(n_dims=n_dims, in_channels=2, backbone=backbone, bottleneck=bottleneck,
                       embedding_dim=4 if bottleneck == "gaussian" else 8, n_codes=16,
                       **{backbone: BACKBONES[backbone]}, quantizer=BOTTLENECKS[bottleneck] or None)


def loss_of(out: AutoencoderOutput, x: torch.Tensor) -> torch.Tensor:
    kl = out.kl_loss if out.kl_loss is not None else 0.0
    return F.mse_loss(out.reconstruction, x) + out.aux_loss + kl


@pytest.mark.parametrize("n_dims", [1, 2, 3])
@pytest.mark.parametrize("bottleneck", list(BOTTLENECKS))
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_pair_trains_saves_reloads_and_round_trips(backbone, bottleneck, n_dims, tmp_path):
    model = build(backbone, bottleneck, n_dims)
    spatial = SPATIAL[n_dims]
    x = torch.randn(2, 2, *spatial)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        out = model(x)
        assert out.loss is None  # the Autoencoder weighs nothing; the objective does
        opt.zero_grad()
        loss_of(out, x).backward()
        opt.step()
    assert torch.isfinite(loss_of(out, x))

    model.eval()
    loaded = load_pretrained(model.save_pretrained(tmp_path / "m"))
    assert type(loaded) is Autoencoder and loaded.config == model.config
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(loaded(x).reconstruction, ref.reconstruction)
        codes = loaded.encode(x)
        torch.testing.assert_close(loaded.decode(codes), ref.reconstruction, atol=1e-5, rtol=1e-5)

    latent = tuple(s // 2 for s in spatial)
    assert model.downsample == (2,) * n_dims and model.latent_shape(spatial) == latent
    assert ref.reconstruction.shape == x.shape
    if bottleneck == "gaussian":
        assert isinstance(codes, GaussianLatent) and codes.mean.shape == (2, 4, *latent)
        assert model.codebook_sizes == () and model.code_shapes(spatial) == [] and ref.indices is None
        assert set(ref.scalars()) == {"kl_loss", "latent_std"}
    else:
        assert model.code_shapes(spatial) == [tuple(codes.shape[1:])] and codes.shape[1:1 + n_dims] == latent
        sizes = model.codebook_sizes
        assert len(sizes) == (codes.shape[-1] if codes.ndim == 2 + n_dims else 1)
        assert ref.counts.shape == (len(sizes), max(sizes)) and int(codes.max()) < max(sizes)
        assert set(ref.scalars()) == {"commitment_loss", "perplexity", "usage"}


def test_lfq_reports_its_real_codebook_size():
    model = Autoencoder(n_dims=1, in_channels=1, bottleneck="lfq", n_codes=512, embedding_dim=8,
                        videogpt={"n_hiddens": 16, "num_res_blocks": 0})
    assert model.codebook_sizes == (512,)
    assert int(model.eval().encode(torch.randn(4, 1, 64)).max()) < 512
    fsq = Autoencoder(n_dims=1, in_channels=1, bottleneck="fsq", quantizer={"fsq_levels": [8, 5, 5, 5]},
                      videogpt={"n_hiddens": 16, "num_res_blocks": 0})
    assert fsq.codebook_sizes == (1000,)


def test_defaults_and_embedding_dim():
    assert Autoencoder(videogpt={"n_hiddens": 16}).embedding_dim == 64
    kl = Autoencoder(backbone="ldm", bottleneck="gaussian", ldm={"channels": [8], "norm_num_groups": 4})
    assert kl.embedding_dim == 4 and kl.downsample == (1, 1) and kl.quantizer is None
    assert kl.bottleneck.to_mean.weight.shape[:2] == (4, 4)  # E -> E mean / log-variance convolutions


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(backbone="unet"), ConfigError, r"backbone must be one of \('videogpt', 'ldm'\), got 'unet'"),
    (dict(bottleneck="kmeans"), ConfigError, "bottleneck must be one of .*got 'kmeans'"),
    (dict(videogpt={"n_hidens": 8}), TypeError, r"videogpt got unknown options \['n_hidens'\]"),
    (dict(videogpt={"latent_channels": 8}), TypeError, r"unknown options \['latent_channels'\]"),
    (dict(backbone="ldm", ldm={"channels": [8], "norm_num_groups": 3}), ConfigError,
     r"norm_num_groups \(3\) must divide every entry of channels"),
    (dict(backbone="ldm", ldm={"channels": [8, 8], "num_res_blocks": [1]}), ConfigError,
     r"num_res_blocks needs one entry per entry of channels \(2\), got 1"),
    (dict(quantizer=[1]), TypeError, "quantizer must be a dict"),
    (dict(quantizer={"restrat": "none"}), TypeError, "unknown options"),
    (dict(embedding_dim=0), ConfigError, "embedding_dim must be an int >= 1, got 0"),
    (dict(n_codes=1), ConfigError, "n_codes must be an int >= 2, got 1"),
])
def test_bad_arguments_are_one_line_errors(kwargs, err, match):
    with pytest.raises(err, match=match):
        Autoencoder(**kwargs)


def test_ldm_per_level_res_blocks_and_out_channels():
    model = Autoencoder(n_dims=2, in_channels=3, out_channels=1, backbone="ldm", bottleneck="vq", embedding_dim=8,
                        n_codes=16, ldm={"channels": [8, 16], "num_res_blocks": [0, 2], "norm_num_groups": 4,
                                         "with_encoder_nonlocal_attn": False})
    x = torch.randn(2, 3, 8, 8)
    assert model(x).reconstruction.shape == (2, 1, 8, 8)  # forward of the Autoencoder needs no loss
    assert model.config["ldm"]["num_res_blocks"] == [0, 2]


def test_hierarchical_autoencoder_multi_codebook_and_refusals(tmp_path):
    model = HierarchicalAutoencoder(n_dims=2, in_channels=1, bottleneck="residual", embedding_dim=8, n_codes=16,
                                    videogpt={"n_hiddens": 16, "num_res_blocks": 1, "downsample": 2},
                                    quantizer={"num_quantizers": 2}, top={"n_codes": 8})
    x = torch.randn(2, 1, 16, 16)
    out = model(x)
    assert out.loss is None and out.indices.top.shape == (2, 4, 4, 2) and out.indices.bottom.shape == (2, 8, 8, 2)
    assert model.codebook_sizes == (8, 8, 16, 16)
    assert model.code_shapes((16, 16)) == [(4, 4, 2), (8, 8, 2)] and model.latent_shape((16, 16)) == (8, 8)
    loaded = load_pretrained(model.eval().save_pretrained(tmp_path / "h"))
    assert type(loaded) is HierarchicalAutoencoder
    torch.testing.assert_close(loaded.decode(loaded.encode(x)), model(x).reconstruction, atol=1e-5, rtol=1e-5)
    for kwargs in (dict(backbone="ldm"), dict(bottleneck="gaussian")):
        with pytest.raises(ConfigError, match="needs backbone 'videogpt' and a quantizer bottleneck"):
            HierarchicalAutoencoder(**kwargs)
    with pytest.raises(TypeError, match=r"top got unknown options \['codes'\]"):
        HierarchicalAutoencoder(top={"codes": 4})
