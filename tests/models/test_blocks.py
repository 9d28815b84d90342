"""Building blocks: same-padding convolutions match the reference's pad-then-convolve, per-axis
downsampling schedules, and attention on channels-last tokens attends along the right axes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ndvq.models.backbones.attention import NDimAttention
from ndvq.models.backbones.blocks import (
    Decoder,
    Encoder,
    SamePadConv,
    SamePadConvTranspose,
    check_downsample,
    downsample_steps,
)


def reference_pad(kernel, stride):
    """nd_vq_vae / VideoGPT ``SamePadConv`` padding, in F.pad order (last axis first)."""
    out = []
    for k, s in reversed(list(zip(kernel, stride))):
        p = k - s
        out += [p // 2 + p % 2, p // 2]
    return tuple(out)


CASES = [(1, 4, (2,)), (1, 4, (1,)), (2, 4, (2, 2)), (2, 4, (1, 2)), (3, 4, (1, 2, 2)), (3, 3, (1, 1, 1)),
         (3, 4, (2, 1, 1))]


@pytest.mark.parametrize("n_dims,k,stride", CASES)
def test_same_pad_conv_matches_reference(n_dims, k, stride):
    conv = SamePadConv(n_dims, 3, 5, k, stride=stride)
    x = torch.randn(2, 3, *(8,) * n_dims)
    conv_fn = (F.conv1d, F.conv2d, F.conv3d)[n_dims - 1]
    want = conv_fn(F.pad(x, reference_pad((k,) * n_dims, stride)), conv.conv.weight, conv.conv.bias, stride=stride)
    got = conv(x)
    assert got.shape == (2, 5, *(8 // s for s in stride))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_dims,k,stride", CASES)
def test_same_pad_conv_transpose_matches_reference(n_dims, k, stride):
    convt = SamePadConvTranspose(n_dims, 3, 5, k, stride=stride)
    x = torch.randn(2, 3, *(4,) * n_dims)
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n_dims - 1]
    want = fn(F.pad(x, reference_pad((k,) * n_dims, stride)), convt.convt.weight, convt.convt.bias,
              stride=stride, padding=k - 1)
    got = convt(x)
    assert got.shape == (2, 5, *(4 * s for s in stride))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_downsample_steps_and_checks():
    assert downsample_steps((4, 1, 2)) == [(2, 1, 2), (2, 1, 1)]
    assert downsample_steps((1, 1)) == []
    assert check_downsample([4], 3) == (4, 4, 4)
    assert check_downsample(2, 1) == (2,)
    with pytest.raises(ValueError, match=r"powers of two .*\[4, 12\]"):
        check_downsample((4, 12), 2)
    with pytest.raises(TypeError, match="downsample must be an int or a list"):
        check_downsample(None, 2)


@pytest.mark.parametrize("ds", [(1, 4, 4), (4, 2, 1), (2, 2, 2)])
def test_encoder_decoder_per_axis(ds):
    enc = Encoder(3, 2, n_hiddens=8, num_res_blocks=1, downsample=ds, norm="group", norm_num_groups=4)
    dec = Decoder(3, 2, n_hiddens=8, num_res_blocks=1, upsample=ds, norm="group", norm_num_groups=4)
    x = torch.randn(1, 2, 8, 8, 8)
    h = enc(x)
    assert h.shape == (1, 8, *(8 // f for f in ds))
    assert dec(h).shape == x.shape
    assert len(enc.convs) == int(math.log2(max(ds)))


def naive_axial(attn: NDimAttention, x: torch.Tensor) -> torch.Tensor:
    """Per-axis multi-head attention written out with einsum, for 2D tokens [B, H, W, C]."""
    b, hh, ww, c = x.shape
    nh, dh = attn.n_head, c // attn.n_head
    qkv = (x @ attn.qkv.weight.T).view(b, hh, ww, 2, 3, nh, dh)
    outs = []
    for a in range(2):
        q, k, v = qkv[..., a, 0, :, :], qkv[..., a, 1, :, :], qkv[..., a, 2, :, :]  # [B, H, W, nh, dh]
        if a == 0:  # along H, for each column
            w = torch.einsum("bind,bjnd->bnij", q.transpose(1, 2).reshape(-1, hh, nh, dh),
                             k.transpose(1, 2).reshape(-1, hh, nh, dh)) / math.sqrt(dh)
            o = torch.einsum("bnij,bjnd->bind", w.softmax(-1), v.transpose(1, 2).reshape(-1, hh, nh, dh))
            o = o.reshape(b, ww, hh, c).transpose(1, 2)
        else:  # along W, for each row
            w = torch.einsum("bind,bjnd->bnij", q.reshape(-1, ww, nh, dh), k.reshape(-1, ww, nh, dh)) / math.sqrt(dh)
            o = torch.einsum("bnij,bjnd->bind", w.softmax(-1), v.reshape(-1, ww, nh, dh)).reshape(b, hh, ww, c)
        outs.append(o)
    return attn.proj(torch.cat(outs, -1))


def test_axial_attention_matches_naive_computation():
    attn = NDimAttention(2, 8, n_head=2, attn_type="axial")
    x = torch.randn(2, 5, 3, 8)  # non-square: both axes must be handled separately
    torch.testing.assert_close(attn(x), naive_axial(attn, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_dims", [2, 3])
def test_axial_attention_only_mixes_along_axes_and_full_mixes_all(n_dims):
    shape = (3, 4, 5)[:n_dims]
    x = torch.randn(1, *shape, 8)
    poke = (0,) + (1,) * n_dims
    x2 = x.clone()
    x2[poke] += 1.0
    axial = NDimAttention(n_dims, 8, 2, "axial").eval()
    changed = (axial(x2) - axial(x)).abs().sum(-1)[0] > 1e-6  # [*S]
    idx = torch.stack(torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij"), -1)
    same_line = ((idx != 1).sum(-1) <= 1)  # positions sharing all but at most one coordinate with the poke
    assert changed.any() and not changed[~same_line].any() and changed[same_line].all()
    full = NDimAttention(n_dims, 8, 2, "full").eval()
    assert ((full(x2) - full(x)).abs().sum(-1) > 1e-6).all()


def test_attention_any_shape_and_1d_axial_equals_full():
    torch.manual_seed(0)
    a = NDimAttention(1, 16, 4, "axial")
    f = NDimAttention(1, 16, 4, "full")
    f.load_state_dict(a.state_dict())
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(a(x), f(x))
    assert NDimAttention(3, 16, 4)(torch.randn(1, 1, 3, 5, 16)).shape == (1, 1, 3, 5, 16)
    with pytest.raises(ValueError, match=r"channels-last tokens .*got shape \[1, 16, 4\]"):
        NDimAttention(1, 8, 2)(torch.randn(1, 16, 4))


def test_attention_dropout_only_in_training():
    a = NDimAttention(2, 8, 2, attn_dropout=0.5)
    x = torch.randn(1, 4, 4, 8)
    a.eval()
    torch.testing.assert_close(a(x), a(x))
    a.train()
    torch.manual_seed(0)
    y1 = a(x)
    torch.manual_seed(1)
    assert not torch.allclose(y1, a(x))


def test_attend_with_dropout_is_inverted_dropout_on_the_weights():
    """attend(p>0): unbiased (mean over draws -> the no-dropout output), about p of the weights dropped."""
    from ndvq.models.backbones.attention import attend

    torch.manual_seed(0)
    q, k, v = (t.reshape(1, 2, 6, 4) for t in torch.randn(3, 2, 6, 4))  # [B=1, H=2, N=6, d=4] each
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(attend(q, k, v, 0.0), exact)
    draws = torch.stack([attend(q, k, v, 0.3) for _ in range(4000)])
    assert torch.allclose(draws.mean(0), exact, atol=0.05)
    ones = torch.eye(6).reshape(1, 1, 6, 6).expand(1, 2, 6, 6)  # v = identity: the output rows are the weights
    w = torch.stack([attend(q, k, ones, 0.3) for _ in range(200)])
    assert abs(float((w == 0).float().mean()) - 0.3) < 0.03
