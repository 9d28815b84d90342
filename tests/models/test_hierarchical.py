"""HierarchicalVQVAE (VQ-VAE-2): both code levels for every dimensionality, consistency, gradients, save/load."""

from __future__ import annotations

import pytest
import torch

from ndvq import HierarchicalVQVAE, load_pretrained
from ndvq.models.outputs import HierarchicalAutoencoderOutput, HierarchicalCodes

SMALL = dict(n_hiddens=16, n_res_layers=1, embedding_dim=8, n_codes=16)
CASES = [(1, [4], [2], (32,)), (2, [2, 2], [2, 1], (16, 8)), (3, [1, 2, 2], [2, 2, 2], (4, 8, 8))]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("n_dims,ds,tds,spatial", CASES)
def test_two_levels_shapes_and_consistency(n_dims, ds, tds, spatial, channels):
    model = HierarchicalVQVAE(n_dims=n_dims, in_channels=channels, downsample=ds, top_downsample=tds,
                              top_n_codes=8, top_embedding_dim=4, **SMALL)
    x = torch.randn(2, channels, *spatial)
    out = model(x)
    bottom = tuple(s // f for s, f in zip(spatial, ds))
    top = tuple(b // f for b, f in zip(bottom, tds))
    assert isinstance(out, HierarchicalAutoencoderOutput) and out.reconstruction.shape == x.shape
    assert out.indices.top.shape == (2, *top) and out.indices.bottom.shape == (2, *bottom)
    assert [c.shape for c in out.counts] == [(1, 8), (1, 16)]
    assert model.latent_shape(spatial) == bottom  # the bottom grid (inputs must divide by both levels)
    assert model.code_shapes(spatial) == [top, bottom] and model.codebook_sizes == (8, 16)
    s = out.scalars()
    assert {"loss", "recon_loss", "commitment_loss", "perplexity", "usage", "top_usage", "bottom_usage"} <= set(s)
    out.loss.backward()
    assert model.backbone.encoder.conv_last.conv.weight.grad.abs().sum() > 0
    assert model.top_backbone.encoder.conv_last.conv.weight.grad.abs().sum() > 0
    model.eval()
    codes = model.encode(x)
    assert isinstance(codes, HierarchicalCodes)
    t, b = codes
    torch.testing.assert_close(model.decode(codes), model(x).reconstruction, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.decode([t, b]), model.decode(codes))


def test_top_code_conditions_bottom_code():
    torch.manual_seed(0)
    model = HierarchicalVQVAE(n_dims=2, in_channels=1, downsample=2, top_downsample=2, **SMALL)
    model(torch.randn(8, 1, 16, 16))  # k-means init of both levels
    model.eval()
    x = torch.randn(2, 1, 16, 16)
    codes = model.encode(x)
    other_top = (codes.top + 1) % 16
    assert not torch.allclose(model.decode((other_top, codes.bottom)), model.decode(codes))


def test_save_load_and_codes(tmp_path):
    model = HierarchicalVQVAE(n_dims=2, in_channels=3, downsample=2, top_downsample=2, **SMALL)
    x = torch.randn(2, 3, 16, 16)
    model(x)
    model.eval()
    model.save_pretrained(tmp_path / "h")
    loaded = load_pretrained(tmp_path / "h")
    assert type(loaded) is HierarchicalVQVAE and loaded.config == model.config
    torch.testing.assert_close(loaded(x).reconstruction, model(x).reconstruction)
    levels = loaded.encode(x)
    assert [lv.shape for lv in levels] == [(2, 4, 4), (2, 8, 8)]
    torch.testing.assert_close(loaded.decode(levels), model(x).reconstruction, atol=1e-5, rtol=1e-5)
    assert [c.shape for c in loaded(x).counts] == [(1, 16), (1, 16)]


def test_bad_hierarchical_inputs():
    model = HierarchicalVQVAE(n_dims=2, in_channels=3, downsample=2, top_downsample=2, **SMALL).eval()
    with pytest.raises(ValueError, match=r"not divisible by the total downsampling \[4, 4\]"):
        model(torch.randn(1, 3, 18, 16))
    with pytest.raises(ValueError, match="top_downsample"):
        model.decode((torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long)))
    with pytest.raises(TypeError, match="decode expects the \\(top, bottom\\) codes"):
        model.decode(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="top_downsample factors must be powers of two"):
        HierarchicalVQVAE(n_dims=2, top_downsample=(3, 2), **SMALL)
