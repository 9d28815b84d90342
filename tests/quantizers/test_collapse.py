"""Collapse remedies: each revives codes that a plain quantizer (gradient, random init, no restart) leaves dead.

Data: 32 tight clusters far from the origin; 32 codes. Small, deterministic (fixed seeds), CPU.
Also checks the scheduled mechanics (restart interval, EMA accumulation, k-means over N batches, growth).
"""

import pytest
import torch

from ndvq.quantizers import VectorQuantizer, build_quantizer

PLAIN = dict(update="gradient", init="random", restart="none", cosine=False, codebook_dim=None)  # classic VQ


def _clusters(seed=0, k=32, d=8):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * 2 + 3

    def batch(n=512):
        i = torch.randint(0, k, (n,), generator=g)
        return centers[i] + 0.1 * torch.randn(n, d, generator=g)

    return batch


def _train(q, steps=60, spread_init=False):
    torch.manual_seed(0)
    batch = _clusters()
    if spread_init:  # codes scattered around the data instead of all near the origin
        with torch.no_grad():
            q.embed.copy_(torch.randn_like(q.embed) * 4)
    params = list(q.parameters())
    opt = torch.optim.Adam(params, lr=0.05) if params else None
    q.train()
    for _ in range(steps):
        out = q(batch())
        if opt is not None:
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    q.eval()
    return int((q(batch(4096)).counts > 0).sum())


@pytest.mark.parametrize(
    "remedy, min_alive",
    [
        (dict(init="kmeans"), 30),
        (dict(restart="batch"), 24),
        (dict(restart="replay", replay_size=256), 24),
        (dict(update="ema", init="kmeans", restart="batch"), 30),  # the default remedies, Euclidean lookup
        (dict(update="ema", init="kmeans", restart="batch", cosine=True), 30),  # the default, cosine codes
        (dict(sample_temperature=5.0), 12),
    ],
)
def test_remedy_revives_codes_plain_vq_leaves_dead(remedy, min_alive):
    plain = _train(VectorQuantizer(8, 32, **PLAIN))
    fixed = _train(VectorQuantizer(8, 32, **{**PLAIN, **remedy}))
    assert plain <= 6, f"plain VQ should collapse on this data, used {plain}/32"
    assert fixed >= min_alive, f"{remedy} used {fixed}/32 codes (plain: {plain})"


def test_entropy_regulariser_revives_codes():
    plain = _train(VectorQuantizer(8, 32, **PLAIN), spread_init=True)
    fixed = _train(VectorQuantizer(8, 32, **PLAIN, entropy_weight=0.1), spread_init=True)
    assert fixed >= plain + 6, f"entropy regulariser used {fixed}/32 codes, plain {plain}/32"


def test_restart_only_on_interval_steps():
    # gradient update and no optimizer step: only a restart can change the codes
    q = VectorQuantizer(4, 16, update="gradient", init="random", restart="batch", restart_interval=3).train()
    z = torch.randn(64, 4) + 10  # far from the near-zero random codes
    changed = []
    for _ in range(7):
        before = q.embed.clone()
        q.cluster_size.fill_(4.0)
        q.cluster_size[:8] = 0.0  # half the codes dead (below half the average count)
        q(z)
        changed.append(bool((q.embed != before).any()))
        assert torch.equal(q.embed[8:], before[8:]), "a live code was re-seeded"
    # steps 0, 3, 6 are due; step 0 has no candidates yet (they are drawn from the previous step's tokens)
    assert changed == [False, False, False, True, False, False, True]


def test_ema_accumulates_before_updating():
    q = VectorQuantizer(4, 16, restart="none", ema_accumulate_steps=3).train()
    q(torch.randn(256, 4))  # k-means init + first accumulation
    snapshots = [q.embed.clone()]
    for _ in range(3):
        q(torch.randn(256, 4) + 1)
        snapshots.append(q.embed.clone())
    moved = [bool((a != b).any()) for a, b in zip(snapshots, snapshots[1:])]
    assert moved == [False, True, False]  # steps 0, 1, 2 accumulate; the update is applied at step 2


def test_kmeans_over_several_batches():
    q = VectorQuantizer(4, 16, kmeans_batches=3, kmeans_iters=2).train()
    for i in range(3):
        assert not bool(q.initialised)
        q(torch.randn(128, 4))
        assert int(q.init_batches) == i + 1
    assert bool(q.initialised)


def test_grow_codebook_activates_copies_of_live_codes():
    batch = _clusters(seed=1, k=48)
    q = VectorQuantizer(8, 16, grow_to=48, grow_at_step=5, restart="none").train()
    assert q.n_codes == 48 and int(q.active.sum()) == 16
    for step in range(12):
        out = q(batch())
        if step < 5:
            assert int((out.counts[0, 16:] > 0).sum()) == 0, "inactive codes must never be chosen"
    assert int(q.active.sum()) == 48
    q.eval()
    used = int((q(batch(4096)).counts > 0).sum())
    assert used > 24, f"after growing to 48 codes only {used} are used"


def test_gradient_codebook_lr_and_parameters():
    q = build_quantizer("vq", 8, 16, update="gradient", codebook_lr=1e-4)
    assert q.codebook_lr == 1e-4 and q.codebook_parameters() == [q.embed]
    assert build_quantizer("vq", 8, 16).codebook_parameters() == []


def _count_reseeds(q):
    """Wrap ``q._restart`` to count re-seeded codes per step (eager mode); returns the list it fills."""
    counts, restart = [], q._restart

    def counted():
        before = q.embed.detach().clone()
        restart()
        counts.append(int((q.embed.detach() != before).any(dim=1).sum()))

    q._restart = counted
    return counts


def test_relative_threshold_does_not_churn_when_codes_outnumber_tokens():
    """64 tokens per step, 256 codes (the benchmark's 2048 tokens / 8192 codes ratio): the average code's
    EMA count is 0.25, so an absolute threshold of 1.0 re-seeds codes that are in use, over and over;
    the default relative rule (half the average count) re-seeds only codes the data leaves unused."""
    def run(**opts):
        torch.manual_seed(0)
        batch = _clusters(seed=2, k=256)
        # per-step EMA updates (no token accumulation), so only the dead-code rule differs
        q = VectorQuantizer(8, 256, cosine=False, codebook_dim=None, ema_tokens_per_code=0, **opts).train()
        reseeds = _count_reseeds(q)
        for _ in range(300):
            q(batch(64))
        q.eval()
        return sum(reseeds[100:]), int((q(batch(16384)).counts > 0).sum())

    relative_reseeds, relative_alive = run()
    absolute_reseeds, absolute_alive = run(restart_threshold=1.0)
    assert absolute_reseeds > 5 * max(relative_reseeds, 1), (relative_reseeds, absolute_reseeds)
    assert relative_alive >= 0.9 * 256, f"relative rule: {relative_alive}/256 codes used"
    assert relative_alive >= absolute_alive


@pytest.mark.parametrize("sampling, near_b", [("error", (0.9, 1.0)), ("uniform", (0.0, 0.2))])
def test_error_sampling_puts_new_codes_where_the_codebook_fails(sampling, near_b):
    """95% of tokens sit on the codes (cluster A), 5% far away (cluster B, unserved): error-weighted
    candidates come from B, uniform ones mostly from A."""
    torch.manual_seed(0)
    q = VectorQuantizer(2, 16, init="random", cosine=False, codebook_dim=None, restart_sampling=sampling).train()
    x = torch.cat([0.01 * torch.randn(950, 2), torch.tensor([10.0, 10.0]) + 0.01 * torch.randn(50, 2)])
    q(x)
    share_b = float((q.candidates.norm(dim=1) > 5).float().mean())
    assert near_b[0] <= share_b <= near_b[1], f"{sampling}: {share_b:.2f} of candidates near B"


@pytest.mark.parametrize("tokens_per_code, expected", [(1.0, [False, False, True, False, False, False, True]),
                                                       (0.0, [True] * 7)])
def test_ema_waits_for_enough_tokens_per_code(tokens_per_code, expected):
    """16 tokens per step, 64 codes: with ema_tokens_per_code=1 an update comes every 4th step."""
    q = VectorQuantizer(4, 64, restart="none", cosine=False, codebook_dim=None,
                        ema_tokens_per_code=tokens_per_code).train()
    q(torch.randn(16, 4))  # step 0: k-means init; its statistics start the first accumulation
    moved = []
    for _ in range(7):
        before = q.embed.clone()
        q(torch.randn(16, 4) + 1)
        moved.append(bool((q.embed != before).any()))
    assert moved == expected
