"""Default VectorQuantizer: shapes, gradients, lookup consistency, state round trip, compile."""

import pytest
import torch

from ndvq.quantizers import VectorQuantizer, build_quantizer

TOKEN_SHAPES = {1: (2, 16), 2: (2, 8, 8), 3: (2, 4, 4, 4)}  # [B, *latent] for n_dims 1/2/3


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_default_vq_shapes_grad_lookup(n_dims):
    q = build_quantizer("vq", dim=8, n_codes=32).train()
    z = torch.randn(*TOKEN_SHAPES[n_dims], 8, requires_grad=True)
    out = q(z)
    assert out.quantized.shape == z.shape
    assert out.indices.shape == z.shape[:-1] and out.indices.dtype == torch.long
    assert out.counts.shape == (1, 32) and out.counts.sum() == z[..., 0].numel()
    assert bool(q.initialised) and int(q.step) == 1
    (out.loss + out.quantized.square().sum()).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    q.eval()
    out = q(z.detach())
    torch.testing.assert_close(q.lookup(out.indices), out.quantized, atol=1e-6, rtol=0)


def test_kmeans_init_fits_data_and_load_does_not_reinit():
    torch.manual_seed(1)
    centers = torch.randn(16, 4) * 10
    data = centers[torch.randint(0, 16, (2048,))] + 0.01 * torch.randn(2048, 4)
    q = VectorQuantizer(4, 16, restart="none").train()
    out = q(data)
    # data variance is ~100 per axis; random codes give ~100, k-means finds (almost all of) the clusters
    assert out.commitment_loss < 5.0
    q2 = VectorQuantizer(4, 16, restart="none")
    q2.load_state_dict(q.state_dict())
    assert bool(q2.initialised)
    q2.train()
    before = q2.embed.clone()
    q2(torch.randn(64, 4) * 100)  # a k-means re-init would move codes to this far-away data
    assert (q2.embed - before).abs().max() < 5.0


def test_forward_compiles_without_graph_breaks_in_training():
    q = build_quantizer("vq", dim=8, n_codes=32).train()
    explained = torch._dynamo.explain(q)(torch.randn(128, 8))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert bool(q.initialised)


@pytest.mark.parametrize(
    "opts",
    [dict(update="gradient", restart="replay", replay_size=64, entropy_weight=0.1),
     dict(cosine=True, codebook_dim=4, rotation_trick=True, sample_temperature=0.5, grow_to=48,
          grow_at_step=1, ema_accumulate_steps=2, kmeans_batches=2),
     dict(restart_sampling="uniform", restart_threshold=1.0, ema_tokens_per_code=4.0)],
)
def test_options_compile_fullgraph_with_backward(opts):
    q = build_quantizer("vq", dim=8, n_codes=32, **opts).train()
    compiled = torch.compile(q, fullgraph=True, backend="aot_eager")  # fails on any graph break
    for _ in range(3):
        z = torch.randn(64, 8, requires_grad=True)
        out = compiled(z)
        (out.loss + out.quantized.sum()).backward()
        assert z.grad.abs().sum() > 0
    assert bool(q.initialised) and int(q.step) == 3


@pytest.mark.parametrize("dim, codebook_dim, expected", [(64, "default", 8), (8, "default", 8), (4, "default", 4),
                                                         (64, None, 64), (64, 128, 64), (64, 16, 16)])
def test_codebook_dim_default_is_a_low_dimensional_lookup(dim, codebook_dim, expected):
    """Default: codes looked up in 8 dims through projections; None or >= dim: the tokens' own dims."""
    opts = {} if codebook_dim == "default" else {"codebook_dim": codebook_dim}
    q = build_quantizer("vq", dim, 32, **opts)
    assert q.codebook_dim == expected and q.codebook().shape == (32, expected)
    assert isinstance(q.project_in, torch.nn.Identity) == (expected == dim)
    out = q.train()(torch.randn(4, 10, dim))
    assert out.quantized.shape == (4, 10, dim)
    q.eval()
    z = torch.randn(3, 5, dim)
    assert torch.allclose(q.lookup(q(z).indices), q(z).quantized, atol=1e-6)


@pytest.mark.parametrize("restart", ["batch", "replay"])
def test_non_finite_batch_does_not_poison_the_codebook(restart):
    """A batch with NaN/Inf tokens (a diverging encoder) leaves codes, EMA statistics and restarts finite."""
    torch.manual_seed(0)
    q = build_quantizer("vq", 8, 32, restart=restart, replay_size=64, codebook_dim=None).train()
    for _ in range(3):
        q(torch.randn(64, 8))
    before = {k: v.clone() for k, v in q.state_dict().items()}
    bad = torch.randn(64, 8)
    bad[::3] = float("nan")
    bad[1] = float("inf")
    q(bad)
    for key in ("embed", "cluster_size", "embed_sum", "pending", "candidates") + (("replay",) if restart == "replay" else ()):
        assert torch.isfinite(q.state_dict()[key]).all(), key
    threshold = q._dead_threshold(before["cluster_size"], before["active"])
    live = before["cluster_size"] >= threshold  # dead ones may be re-seeded from the finite rows
    assert live.any() and torch.equal(q.embed[live], before["embed"][live])  # that step's EMA update was skipped
    q(torch.randn(64, 8))  # and training continues normally
    assert torch.isfinite(q.embed).all() and not torch.equal(q.embed, before["embed"])


@pytest.mark.parametrize("restart", ["batch", "replay"])
def test_loads_state_saved_before_the_restart_candidates_existed(restart):
    """A state dict without ``candidates``/``has_candidates``/``replay_weight`` (ndvq 0.1.0) loads strictly."""
    q = build_quantizer("vq", 8, 32, restart=restart, replay_size=64).train()
    for _ in range(3):
        q(torch.randn(64, 8))
    old = {k: v for k, v in q.state_dict().items() if k not in ("candidates", "has_candidates", "replay_weight")}
    q2 = build_quantizer("vq", 8, 32, restart=restart, replay_size=64)
    q2.load_state_dict(old)  # strict
    assert not bool(q2.has_candidates) and torch.equal(q2.embed, q.embed)
    if restart == "replay":
        assert float(q2.replay_weight.sum()) == min(64, int(q.replay_filled))
    q2.train()(torch.randn(64, 8))  # trains on
    assert bool(q2.has_candidates)
