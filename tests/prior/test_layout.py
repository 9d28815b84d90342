"""The token order of prior.layout: a lossless round trip for every code-grid kind, tiles that cover the latent
once, the column-major order that makes the first k residual levels a prefix of each tile."""

from __future__ import annotations

import pytest
import torch

from ndvq import VQVAE, Autoencoder, HierarchicalVQVAE
from ndvq.prior import layout_for
from ndvq.run.codes import encode_grids

MODELS = {
    "vq-1d": (lambda: VQVAE(n_dims=1, in_channels=1, n_hiddens=8, downsample=[4], embedding_dim=4, n_codes=16), (44,)),
    "residual-2d": (lambda: Autoencoder(n_dims=2, in_channels=1, bottleneck="residual", n_codes=8,
                                        quantizer={"num_quantizers": 3}), (36, 20)),
    "fsq-3d": (lambda: Autoencoder(n_dims=3, in_channels=1, bottleneck="fsq", quantizer={"fsq_levels": [5, 5, 5]}),
               (16, 12, 8)),
    "hierarchical-2d": (lambda: HierarchicalVQVAE(n_dims=2, in_channels=1), (72, 40)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("block", [None, (3, 3, 3), (8, 8, 8)])
def test_round_trip_and_cover(name, block):
    make, spatial = MODELS[name]
    model = make().eval()
    grids = [g[0] for g in encode_grids(model, torch.randn(1, model.config.get("in_channels", 1), *spatial))]
    lay = layout_for(model, spatial, block[:len(spatial)] if block else None)
    tokens = lay.flatten(grids)
    assert [t.numel() for t in tokens] == [t.length for t in lay.tiles]
    assert lay.n_tokens == sum(g.numel() for g in grids)
    back = lay.unflatten(tokens)
    assert [b.shape for b in back] == [g.shape for g in grids]
    assert all(torch.equal(a, b) for a, b in zip(grids, back))
    for tile, seq in zip(lay.tiles, tokens):
        assert (seq < torch.from_numpy(tile.vocab)).all() and (tile.coords < max(lay.block)).all()


def test_residual_levels_are_a_prefix_of_each_tile():
    make, spatial = MODELS["residual-2d"]
    model = make().eval()
    lay = layout_for(model, spatial, (4, 4))
    for tile in lay.tiles:
        cols = tile.column.tolist()
        assert cols == sorted(cols)  # level 0 of every position, then level 1, ...
