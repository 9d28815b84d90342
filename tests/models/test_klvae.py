"""KLVAE for 1D/2D/3D: shapes, KL reduction (by hand), gradient flow, eval consistency, save/load, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from ndvq.models import (
    KLVAE,
    AutoencoderOutput,
    GaussianLatent,
    latent_scale_factor,
    load_pretrained,
)


def tiny(n_dims: int, **kw) -> KLVAE:
    args = dict(n_dims=n_dims, in_channels=2, latent_channels=3, channels=(8, 16, 16), num_res_blocks=1,
                norm_num_groups=4, norm_eps=1e-6, attention_levels=(False, False, True),
                with_encoder_nonlocal_attn=True, with_decoder_nonlocal_attn=True)
    args.update(kw)
    return KLVAE(**args)


SIZES = {1: (32,), 2: (16, 24), 3: (8, 12, 16)}


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_shapes(n_dims):
    model = tiny(n_dims)
    x = torch.randn(2, 2, *SIZES[n_dims])
    out = model(x)
    latent = tuple(s // 4 for s in SIZES[n_dims])
    assert isinstance(out, AutoencoderOutput)
    assert out.reconstruction.shape == x.shape
    assert out.mean.shape == out.std.shape == (2, 3, *latent)
    assert model.latent_shape(SIZES[n_dims]) == latent
    assert model.latent_shape((2, *SIZES[n_dims])) == latent  # [C, *S] accepted too
    enc = model.encode(x)
    assert isinstance(enc, GaussianLatent) and (enc.std > 0).all()
    assert model.decode(enc.mean).shape == x.shape
    s = out.scalars()
    assert set(s) >= {"loss", "recon_loss", "kl_loss"} and all(v.ndim == 0 and not v.requires_grad for v in s.values())


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_kl_reduction_and_total_by_hand(n_dims):
    model = tiny(n_dims, kl_weight=0.01, recon_loss="l2")
    x = torch.randn(3, 2, *SIZES[n_dims])
    model.eval()  # z = mean: deterministic
    out = model(x)
    mean, std = out.mean.double(), out.std.double()
    per_sample = [
        sum(0.5 * (m * m + s * s - math.log(s * s) - 1) for m, s in zip(mean[b].flatten().tolist(), std[b].flatten().tolist()))
        for b in range(3)
    ]
    kl = sum(per_sample) / 3  # summed over every latent dim, averaged over the batch
    assert out.kl_loss.item() == pytest.approx(kl, rel=1e-4)
    rec = ((out.reconstruction.double() - x.double()) ** 2).mean().item()
    assert out.recon_loss.item() == pytest.approx(rec, rel=1e-5)
    assert out.loss.item() == pytest.approx(rec + 0.01 * kl, rel=1e-4)


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_gradient_flow(n_dims):
    model = tiny(n_dims, kl_weight=1.0)
    out = model(torch.randn(2, 2, *SIZES[n_dims]))
    out.loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_training_samples_eval_uses_mean():
    model = tiny(2)
    x = torch.randn(2, 2, 16, 16)
    model.train()
    a, b = model(x).reconstruction, model(x).reconstruction
    assert not torch.equal(a, b)  # sampled latents
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x).reconstruction, model.decode(model.encode(x).mean))


@pytest.mark.parametrize("n_dims", [1, 3])
def test_save_load_roundtrip(n_dims, tmp_path):
    model = tiny(n_dims, recon_loss="l2", kl_weight=0.5).eval()
    x = torch.randn(1, 2, *SIZES[n_dims])
    model.save_pretrained(tmp_path / "m")
    for loaded in (KLVAE.from_pretrained(tmp_path / "m"), load_pretrained(tmp_path / "m")):
        assert isinstance(loaded, KLVAE) and loaded.config == model.config
        with torch.no_grad():
            torch.testing.assert_close(loaded(x).reconstruction, model(x).reconstruction)


def test_no_attention_and_zero_res_blocks():
    model = KLVAE(2, 1, channels=(4, 8), num_res_blocks=0, norm_num_groups=4, attention_levels=None,
                  with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
    out = model(torch.randn(1, 1, 8, 8))
    assert out.reconstruction.shape == (1, 1, 8, 8)
    assert not any("qkv" in n for n, _ in model.named_parameters())


def test_bad_input():
    model = tiny(2)
    with pytest.raises(ValueError, match=r"\(4 dims for n_dims=2\), got 3 dims"):
        model(torch.randn(2, 16, 16))
    with pytest.raises(ValueError, match=r"expected 2 channels \(dim 1\), got 3"):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 2, 16, 16, dtype=torch.long))
    bad = torch.randn(1, 2, 16, 16)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(bad)
    with pytest.raises(ValueError, match=r"multiple of 2\*\*\(len\(channels\)-1\) = 4.*\[16, 18\]"):
        model(torch.randn(1, 2, 16, 18))
    with pytest.raises(ValueError, match=r"expected 3 channels \(dim 1\), got 2"):
        model.decode(torch.randn(1, 2, 4, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model.encode([[1.0]])
    model.to(memory_format=torch.channels_last)  # channels-last input just works
    x = torch.randn(1, 2, 16, 16).to(memory_format=torch.channels_last)
    assert model(x).reconstruction.shape == (1, 2, 16, 16)


def test_bad_constructor_args():
    with pytest.raises(ValueError, match="norm_num_groups \\(48\\) must divide every entry of channels; 64 is not divisible by 48"):
        KLVAE(2, 1, channels=(64, 128, 256), norm_num_groups=48)
    with pytest.raises(ValueError, match="attention_levels needs one entry"):
        KLVAE(2, 1, channels=(8, 16), norm_num_groups=4, attention_levels=(True,))
    with pytest.raises(ValueError, match="recon_loss"):
        KLVAE(2, 1, channels=(8,), norm_num_groups=4, recon_loss="huber")
    with pytest.raises(ValueError, match="n_dims"):
        KLVAE(4, 1, channels=(8,), norm_num_groups=4)
    with pytest.raises(ValueError, match="in_channels"):
        KLVAE(2, 0, channels=(8,), norm_num_groups=4)
    with pytest.raises(ValueError, match="out_channels == in_channels"):
        KLVAE(2, 1, out_channels=2, channels=(8,), norm_num_groups=4)(torch.randn(1, 1, 8, 8))


def test_latent_scale_factor():
    means = torch.tensor([1.0, 3.0, 5.0, 7.0])
    assert latent_scale_factor(means) == pytest.approx(1 / means.std().item())
    with pytest.raises(ValueError, match="positive"):
        latent_scale_factor(torch.ones(8))
    with pytest.raises(ValueError, match="at least 2"):
        latent_scale_factor(torch.ones(1))
