"""VQVAE: shapes for every dimensionality / channel count / per-axis downsampling, decode(encode)
consistency, gradient flow, state round trips, input validation and memory layouts."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from ndvq import VQVAE, nd
from ndvq.models.outputs import AutoencoderOutput

SMALL = dict(n_hiddens=16, n_res_layers=1, embedding_dim=8, n_codes=16)

# (n_dims, downsample) with per-axis factors, including axes that keep their size
DOWNSAMPLES = [
    (1, [4]), (1, [2]),
    (2, [4, 4]), (2, [1, 4]), (2, [2, 8]),
    (3, [1, 4, 4]), (3, [2, 2, 2]), (3, [4, 1, 2]),
]


def spatial_for(ds: list[int]) -> tuple[int, ...]:
    """A small input size divisible by the factors, with more than one latent position per axis."""
    return tuple(max(4, 2 * f) for f in ds)


def make(n_dims: int, channels: int, ds, **kw) -> VQVAE:
    return VQVAE(n_dims=n_dims, in_channels=channels, downsample=ds, **{**SMALL, **kw})


@pytest.mark.parametrize("channels", [1, 3, 5])
@pytest.mark.parametrize("n_dims,ds", DOWNSAMPLES)
def test_shapes_and_decode_encode_consistency(n_dims, ds, channels):
    model = make(n_dims, channels, ds)
    spatial = spatial_for(ds)
    x = torch.randn(2, channels, *spatial)
    out = model(x)
    latent = tuple(s // f for s, f in zip(spatial, ds))
    assert isinstance(out, AutoencoderOutput)
    assert out.reconstruction.shape == x.shape
    assert out.indices.shape == (2, *latent) and out.indices.dtype == torch.long
    assert model.latent_shape(spatial) == latent
    assert model.latent_shape((channels, *spatial)) == latent
    assert out.counts.shape == (1, 16)
    for v in (out.loss, out.recon_loss, out.commitment_loss, out.perplexity, out.usage):
        assert v.ndim == 0 and torch.isfinite(v)
    torch.testing.assert_close(out.loss, out.recon_loss + 0.5 * out.commitment_loss)  # the default beta
    model.eval()
    codes = model.encode(x)
    assert codes.shape == (2, *latent)
    torch.testing.assert_close(model.decode(codes), model(x).reconstruction, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn_type", ["axial", "full"])
@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_gradients_reach_encoder_and_decoder(n_dims, attn_type):
    model = make(n_dims, 2, 2, attn_type=attn_type, dropout=0.1, attn_dropout=0.1)
    x = torch.randn(2, 2, *(8,) * n_dims)
    model(x).loss.backward()
    first = model.backbone.encoder.convs[0].conv.weight.grad
    assert first is not None and first.abs().sum() > 0
    assert model.backbone.decoder.convts[-1].convt.weight.grad.abs().sum() > 0
    attn = model.backbone.encoder.res_stack[0].attn
    assert attn.qkv.weight.grad.abs().sum() > 0


def test_scalars_are_detached_and_named():
    out = make(2, 3, 4)(torch.randn(2, 3, 16, 16))
    s = out.scalars()
    assert set(s) == {"loss", "recon_loss", "commitment_loss", "perplexity", "usage"}
    assert all(not v.requires_grad and v.ndim == 0 for v in s.values())
    assert 0 < float(s["usage"]) <= 1 and 1 <= float(s["perplexity"]) <= 16


def test_recon_loss_factor_l1_and_norms():
    x = torch.randn(2, 1, 16, 16)
    model = make(2, 1, 4, recon_loss="l1", recon_loss_factor=2.0, norm="group", num_groups=4, n_head=0)
    out = model(x)
    torch.testing.assert_close(out.recon_loss, (out.reconstruction - x).abs().mean())
    torch.testing.assert_close(out.loss, 2.0 * out.recon_loss + 0.5 * out.commitment_loss)  # the default beta
    assert model.backbone.encoder.res_stack[0].attn is None  # n_head=0 turns attention off
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_no_downsampling_and_out_channels():
    model = make(2, 3, 1, out_channels=2)
    x = torch.randn(1, 3, 8, 8)
    assert model.eval().decode(model.encode(x)).shape == (1, 2, 8, 8)
    with pytest.raises(ValueError, match="out_channels == in_channels"):
        model(x)


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_channels_last_and_non_contiguous_inputs(n_dims):
    model = make(n_dims, 3, 2).eval()
    x = torch.randn(2, 3, *(8,) * n_dims)
    if n_dims == 1:
        other = torch.randn(2, 8, 3).transpose(1, 2)  # a non-contiguous view
        other.copy_(x)
    else:
        fmt = torch.channels_last if n_dims == 2 else torch.channels_last_3d
        other = x.to(memory_format=fmt)
    assert not other.is_contiguous()
    torch.testing.assert_close(model(other).reconstruction, model(x).reconstruction, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.encode(other), model.encode(x))
    sliced = torch.randn(2, 3, *(16,) * n_dims)[(..., *[slice(None, None, 2)] * n_dims)]  # strided view
    assert model(sliced).reconstruction.shape == sliced.shape


def test_codebook_stays_initialised_after_load_state_dict():
    torch.manual_seed(0)
    a = make(2, 3, 4)
    x, x2 = torch.randn(4, 3, 16, 16), 3 * torch.randn(4, 3, 16, 16) + 1
    a(x)  # k-means init on the first training batch
    assert bool(a.quantizer.initialised)
    b = make(2, 3, 4)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert bool(b.quantizer.initialised)
    torch.testing.assert_close(b.quantizer.embed, a.quantizer.embed)
    # the loaded model continues exactly as the original would: no second k-means on x2
    torch.manual_seed(1)
    a(x2)
    torch.manual_seed(1)
    b(x2)
    torch.testing.assert_close(b.quantizer.embed, a.quantizer.embed)
    fresh = make(2, 3, 4)
    torch.manual_seed(1)
    fresh(x2)  # a model that was never trained initialises from x2 instead
    assert not torch.allclose(fresh.quantizer.embed, a.quantizer.embed)


def test_codebook_parameters():
    assert make(2, 3, 4).codebook_parameters() == []  # EMA codebook: no parameters
    model = make(2, 3, 4, quantizer={"kind": "vq", "update": "gradient", "codebook_lr": 1e-3})
    params = model.codebook_parameters()
    assert len(params) == 1 and params[0] is model.quantizer.embed


def test_quantizer_options_reach_the_quantizer():
    model = make(2, 3, 4, codebook_beta=0.5, ema_decay=0.9, quantizer={"kind": "vq", "restart": "none"})
    assert model.quantizer.beta == 0.5 and model.quantizer.ema_decay == 0.9 and model.quantizer.restart == "none"
    assert model.config["quantizer"] == {"kind": "vq", "restart": "none"}
    assert model.codebook_sizes == (16,)


def _other_kinds():
    files = {"fsq": "fsq", "lfq": "lfq", "simvq": "simvq", "residual": "residual", "grouped": "grouped"}
    return [k for k, f in files.items() if importlib.util.find_spec(f"ndvq.quantizers.{f}") is not None]


KIND_OPTIONS = {"fsq": {"fsq_levels": [4, 4, 2]}, "lfq": {}, "simvq": {}, "residual": {"num_quantizers": 2, "cosine": False},
                "grouped": {"groups": 2}}


@pytest.mark.parametrize("kind", ["vq", *_other_kinds()])  # quantizer files present in this checkout
def test_every_quantizer_kind_round_trips(kind):
    model = make(2, 3, 4, quantizer={"kind": kind, **KIND_OPTIONS.get(kind, {})})
    x = torch.randn(2, 3, 16, 16)
    out = model(x)
    out.loss.backward()
    model.eval()
    codes = model.encode(x)
    assert codes.shape[:3] == (2, 4, 4)
    torch.testing.assert_close(model.decode(codes), model(x).reconstruction, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def model2d():
    return VQVAE(n_dims=2, in_channels=3, downsample=(4, 2), **SMALL)


@pytest.mark.parametrize("x,err,match", [
    (torch.randn(2, 3, 16), ValueError, r"expected input \[B, C, S0, S1\] \(4 dims.*got 3 dims"),
    (torch.randn(2, 3, 16, 16, 16), ValueError, r"4 dims for n_dims=2\), got 5 dims"),
    (torch.randn(2, 4, 16, 16), ValueError, "expected 3 channels .*got 4"),
    (torch.randn(2, 3, 18, 16), ValueError, r"spatial size \[18, 16\] is not divisible by .*\[4, 2\]"),
    (torch.randn(2, 3, 16, 15), ValueError, r"not divisible"),
    (torch.zeros(2, 3, 16, 16, dtype=torch.long), TypeError, "floating-point.*torch.int64"),
    (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), TypeError, "floating-point.*torch.uint8"),
    ("not a tensor", TypeError, "torch.Tensor, got str"),
])
def test_bad_inputs(model2d, x, err, match):
    for fn in (model2d, model2d.encode):
        with pytest.raises(err, match=match):
            fn(x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_input(model2d, bad):
    x = torch.randn(2, 3, 16, 16)
    x[1, 2, 5, 7] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        model2d(x)
    model2d.validate_inputs = False  # the check can be turned off (it costs a host sync)
    try:
        assert model2d.eval()(x).reconstruction.shape == x.shape
    finally:
        model2d.validate_inputs = True
        model2d.train()


def test_large_finite_input_is_not_flagged(model2d):
    x = torch.full((2, 3, 16, 16), 3e38)  # the sum overflows, yet every value is finite
    model2d.eval()(x)
    model2d.train()


def test_bad_decode_indices(model2d):
    model2d.eval()
    with pytest.raises(TypeError, match="integer tensor, got dtype torch.float32"):
        model2d.decode(torch.zeros(1, 4, 8))
    with pytest.raises(ValueError, match=r"shape \[B, \*latent\(2 axes\)\], got \[4, 8\]"):
        model2d.decode(torch.zeros(4, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 15\], got values in \[16, 16\]"):
        model2d.decode(torch.full((1, 4, 8), 16))
    model2d.train()


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(n_dims=0), ValueError, "n_dims must be 1, 2 or 3, got 0"),
    (dict(n_dims=4), ValueError, "n_dims must be 1, 2 or 3, got 4"),
    (dict(downsample=(3, 4)), ValueError, r"powers of two .*got \[3, 4\]"),
    (dict(downsample=(4, 4, 4)), ValueError, "must have 2 entries"),
    (dict(downsample=6), ValueError, "powers of two"),
    (dict(n_hiddens=30, n_head=4), ValueError, r"n_hiddens \(30\) must be divisible by n_head \(4\)"),
    (dict(norm="layer"), ValueError, "norm must be one of"),
    (dict(attn_type="sparse"), ValueError, "attn_type must be one of"),
    (dict(recon_loss="huber"), ValueError, "recon_loss must be one of"),
    (dict(in_channels=0), ValueError, "in_channels must be an int >= 1, got 0"),
    (dict(dropout=1.5), ValueError, r"dropout must be in \[0, 1\), got 1.5"),
    (dict(quantizer="vq"), TypeError, "quantizer must be a dict"),
    (dict(quantizer={"kind": "nope"}), ValueError, "kind must be one of"),
])
def test_bad_constructor_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        VQVAE(**{**SMALL, **kwargs})


def test_nd_factories_only():
    """Every convolution and batch norm matches the model's dimensionality (built through ndvq.nd)."""
    for n_dims in (1, 3):
        model = make(n_dims, 1, 2)
        convs = {type(m).__name__ for m in model.modules()
                 if type(m).__module__.startswith("torch.nn") and ("Conv" in type(m).__name__ or "BatchNorm" in type(m).__name__)}
        assert all(name.endswith(f"{n_dims}d") for name in convs), convs
    assert nd.ntuple(2, 3) == (2, 2, 2)


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_channel_norm_normalises_each_position_alone_the_same_in_training_and_eval(n_dims):
    """The default norm's output at a position depends only on that position's channels: a crop gives the
    crop of the whole input's output, and training mode gives what eval mode gives (no running statistics)."""
    norm = nd.norm("channel", n_dims, 6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    x = torch.randn(2, 6, *([12] * n_dims)) * 3 + 1
    crop = (slice(None), slice(None), *([slice(2, 7)] * n_dims))
    whole = norm.train()(x)
    torch.testing.assert_close(norm(x[crop]), whole[crop])
    torch.testing.assert_close(norm.eval()(x), whole)
    plain = nd.norm("channel", n_dims, 6)(x)  # weight 1, bias 0: zero mean, unit variance over the channels
    torch.testing.assert_close(plain.mean(1), torch.zeros_like(plain.mean(1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(plain.var(1, unbiased=False), torch.ones_like(plain.mean(1)), atol=1e-3, rtol=0)


def test_the_default_backbone_norm_is_channel_norm_and_batch_norm_stays_an_option():
    default = VQVAE(**SMALL)
    assert any(isinstance(m, nd.ChannelNorm) for m in default.modules())
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in default.modules())
    batch = VQVAE(**SMALL, norm="batch")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in batch.modules())
    assert not any(isinstance(m, nd.ChannelNorm) for m in batch.modules())
