"""CodePrior: the key/value-cache path gives the full forward's logits; masking; sampling paths agree."""

from __future__ import annotations

import pytest
import torch

from ndvq.prior.layout import TokenLayout
from ndvq.prior.model import CodePrior, TileMeta
from ndvq.prior.sample import sample_tile

LAYOUTS = {
    "1d": TokenLayout([(12,)], [(16,)]),
    "2d-residual": TokenLayout([(4, 3)], [(16, 16, 8)], column_axis=[True]),
    "3d": TokenLayout([(2, 3, 4)], [(8,)]),
    "hierarchical": TokenLayout([(2, 2), (4, 4)], [(8,), (16,)]),
}


def _prior(layout: TokenLayout, **kw) -> tuple[CodePrior, TileMeta]:
    tile = layout.tiles[0]
    sizes = [k for cols in layout.columns for k in cols]
    maxc = [int(tile.coords[:, a].max()) + 1 for a in range(tile.coords.shape[1])]
    prior = CodePrior(sizes, len(layout.grid_shapes), maxc, d_model=32, n_layers=2, n_heads=4, **kw).eval()
    return prior, TileMeta.of(tile)


def _tokens(meta: TileMeta, n: int) -> torch.Tensor:
    return (torch.rand(n, meta.length) * meta.vocab.float()).long()  # each token inside its own vocabulary


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_kv_cache_logits_equal_full_forward(name):
    prior, meta = _prior(LAYOUTS[name])
    tokens = _tokens(meta, 3)
    with torch.no_grad():
        full = prior(tokens, meta)  # [3, T, K]
        cache = prior.new_cache(3, meta.length)
        steps = [prior.step(None if i == 0 else tokens[:, i - 1], meta, cache) for i in range(meta.length)]
    inc = torch.stack(steps, 1)
    finite = torch.isfinite(full)
    assert torch.equal(finite, torch.isfinite(inc))
    assert torch.allclose(full[finite], inc[finite], atol=1e-5, rtol=0)


def test_logits_masked_to_each_tokens_vocabulary():
    prior, meta = _prior(LAYOUTS["2d-residual"])
    with torch.no_grad():
        logits = prior(_tokens(meta, 2), meta)
    for i, k in enumerate(meta.vocab.tolist()):
        assert torch.isfinite(logits[:, i, :k]).all() and torch.isinf(logits[:, i, k:]).all()


def test_a_token_depends_only_on_earlier_tokens():
    prior, meta = _prior(LAYOUTS["hierarchical"])
    a = _tokens(meta, 1)
    b = a.clone()
    b[0, 10:] = 0
    with torch.no_grad():
        la, lb = prior(a, meta), prior(b, meta)
    assert torch.allclose(la[:, :11], lb[:, :11], atol=1e-6) and not torch.allclose(la[:, 12:], lb[:, 12:])


@pytest.mark.parametrize("name", ["1d", "hierarchical"])
def test_sampling_with_and_without_cache_agree(name):
    prior, meta = _prior(LAYOUTS[name])
    tile = LAYOUTS[name].tiles[0]
    a = sample_tile(prior, tile, 4, torch.Generator().manual_seed(3), top_k=5)
    b = sample_tile(prior, tile, 4, torch.Generator().manual_seed(3), top_k=5, cache=False)
    assert torch.equal(a, b)
    assert (a < torch.as_tensor(tile.vocab)).all()


def test_a_tile_larger_than_the_trained_one_is_refused():
    prior, _ = _prior(LAYOUTS["1d"])
    with pytest.raises(ValueError, match="does not fit"):
        prior.check_tile(TileMeta.of(TokenLayout([(20,)], [(16,)]).tiles[0]))
