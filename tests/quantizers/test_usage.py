"""CodeUsageTracker: batch perplexity, sliding-window usage, dead codes, resumable state."""

import math

import pytest
import torch

from ndvq.quantizers import CodeUsageTracker, build_quantizer


def test_window_usage_and_dead_codes_slide():
    t = CodeUsageTracker(n_codebooks=2, n_codes=4, window=2)
    t.update(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 5.0]]))
    assert float(t.window_usage()) == pytest.approx(2 / 8) and int(t.dead_codes()) == 6
    t.update(torch.tensor([[0, 2.0, 0, 0], [0, 0, 0, 1.0]]))
    assert float(t.window_usage()) == pytest.approx(3 / 8)
    t.update(torch.tensor([[0, 0, 3.0, 0], [0, 0, 0, 0]]))
    # window of 2 steps: code 0 of codebook 0 (seen at step 0) has dropped out
    assert float(t.window_usage()) == pytest.approx(3 / 8) and int(t.dead_codes()) == 5
    assert float(t.perplexity()) == pytest.approx(1.0)


def test_perplexity_of_uniform_counts_is_number_of_codes():
    t = CodeUsageTracker(1, 8, window=10)
    t.update(torch.ones(8))
    assert float(t.perplexity()) == pytest.approx(8.0)


def test_state_dict_round_trip_and_shape_check():
    t = CodeUsageTracker(1, 4, window=3)
    for c in ([1.0, 0, 0, 0], [0, 1.0, 0, 0]):
        t.update(torch.tensor([c]))
    t2 = CodeUsageTracker(1, 4, window=3)
    t2.load_state_dict(t.state_dict())
    assert float(t2.window_usage()) == float(t.window_usage()) == 0.5
    with pytest.raises(ValueError, match=r"expected counts \[1, 4\]"):
        t.update(torch.ones(2, 4))


@pytest.mark.parametrize("kind", ["vq", "fsq", "residual", "grouped"])
def test_tracker_consumes_every_quantizers_counts(kind):
    q = build_quantizer(kind, 8, 16, fsq_levels=[4, 4], num_quantizers=2, groups=2,
                        **({"cosine": False} if kind == "residual" else {})).train()
    t = CodeUsageTracker(q.n_codebooks, q.n_codes, window=5)
    for _ in range(3):
        out = q(torch.randn(4, 5, 8))
        t.update(out.counts)
    assert 0 < float(t.window_usage()) <= 1
    assert math.isclose(float(t.perplexity()), float(out.perplexity), rel_tol=1e-5)
