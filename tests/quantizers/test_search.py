"""Chunked nearest-code search: equals brute force for any chunk size, honours masks, fp32 under autocast."""

import pytest
import torch

from ndvq.quantizers.search import (
    default_chunk_rows,
    kmeans_seed,
    nearest_codes,
    sample_rows,
    soft_code_distribution,
    weighted_rows,
)


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, None])
def test_chunked_search_matches_brute_force(chunk_rows):
    x, codebook = torch.randn(100, 6), torch.randn(33, 6)
    expected = torch.cdist(x, codebook).argmin(dim=1)
    idx, dist = nearest_codes(x, codebook, chunk_rows=chunk_rows, return_distance=True)
    assert torch.equal(idx, expected)
    torch.testing.assert_close(dist, torch.cdist(x, codebook).min(dim=1).values ** 2, atol=1e-4, rtol=1e-4)


def test_mask_excludes_codes_and_chunk_size_is_bounded():
    x, codebook = torch.randn(50, 4), torch.randn(10, 4)
    mask = torch.arange(10) >= 5
    assert (nearest_codes(x, codebook, mask=mask) >= 5).all()
    assert default_chunk_rows(65536) * 65536 <= 2**24 and default_chunk_rows(16) == 16384


def test_search_is_fp32_under_autocast():
    x, codebook = torch.randn(200, 8), torch.randn(64, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        idx = nearest_codes(x, codebook)
    assert torch.equal(idx, torch.cdist(x, codebook).argmin(dim=1))


def test_temperature_sampling_and_soft_distribution():
    codebook = torch.tensor([[0.0], [1.0]])
    x = torch.full((4000, 1), 0.5)  # equidistant: sampling must pick both codes about equally
    idx = nearest_codes(x, codebook, temperature=1.0)
    assert 0.4 < idx.float().mean() < 0.6
    probs = soft_code_distribution(x, codebook, temperature=1.0)
    torch.testing.assert_close(probs, torch.tensor([0.5, 0.5]))


def test_kmeans_seed_picks_rows_of_the_data():
    x = torch.randn(300, 3)
    seeds = kmeans_seed(x, 16)
    assert seeds.shape == (16, 3)
    assert ((seeds[:, None, :] - x[None]).norm(dim=-1).min(dim=1).values < 0.1).all()
    dup = sample_rows(x[:4], 16, jitter=0.01)  # more rows than the source: duplicates are jittered apart
    assert torch.unique(dup, dim=0).shape[0] == 16


def test_weighted_rows_follow_the_weights():
    torch.manual_seed(0)
    x = torch.arange(4.0).unsqueeze(1)  # row i holds the value i
    picked = weighted_rows(x, torch.tensor([0.0, 1.0, 3.0, 0.0]), 40000).squeeze(1)
    assert set(picked.unique().tolist()) == {1.0, 2.0}, "rows of weight 0 were drawn"
    assert abs(float((picked == 2.0).float().mean()) - 0.75) < 0.02
    uniform = weighted_rows(x, torch.zeros(4), 40000).squeeze(1)  # all weights 0: uniform
    assert set(uniform.unique().tolist()) == {0.0, 1.0, 2.0, 3.0}
    assert abs(float((uniform == 0.0).float().mean()) - 0.25) < 0.02
