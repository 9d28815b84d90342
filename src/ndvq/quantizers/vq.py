"""The default vector quantizer: EMA codebook, k-means init, dead-code restart, and every switch.

How ``forward`` stays one graph under ``torch.compile`` (no ``.item()``, no Python branch on a
tensor value):

- Scheduled events (restart every ``restart_interval`` steps, EMA applied every
  ``ema_accumulate_steps``, growing the codebook at ``grow_at_step``) are computed every
  training step from the ``step`` buffer and applied with ``torch.where`` masks. They cost
  ``O(K * D)`` per step, small next to the ``O(N * K * D)`` search.
- The one expensive one-off, k-means initialisation, runs under ``torch.cond`` on the
  ``initialised`` buffer when compiling. In eager mode it is a plain ``if`` that reads the
  buffer until it first sees it set, then a Python cache skips the check (no host sync per
  step afterwards); ``load_state_dict`` clears the cache.
- Python branches only look at constructor options (``update``, ``restart``, ...), which are
  constants for the compiler.

Dead-code restarts are split over two steps. At the end of a training step ``K`` candidates are
drawn from that step's tokens (or the replay buffer), weighted by their quantization error from the
search just done. At the start of the next due step, codes whose EMA count is below
``restart_share`` of the average code's are re-seeded from them, before the search, so a
gradient-updated codebook is never changed in place after the forward used it.

All state needed to resume (codebook, EMA statistics, step, "initialised", k-means progress,
restart candidates, replay buffer, active-code mask) lives in buffers, so ``load_state_dict``
never re-initialises.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Quantizer, QuantizerOutput, all_reduce_, usage_from_counts
from .search import (
    JITTER,
    kmeans_seed,
    lloyd_update,
    nearest_codes,
    sample_rows,
    soft_code_distribution,
    sync_rows_,
    weighted_rows,
)

__all__ = ["VectorQuantizer", "straight_through", "rotation_trick"]


def straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Value ``q``, gradient of identity to ``x``."""
    return x + (q - x).detach()


def rotation_trick(x: torch.Tensor, q: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Rotation trick (Fifty et al. 2024): value ``q``; gradient through ``sg(lambda R) x``.

    ``R`` rotates ``x/|x|`` onto ``q/|q|`` (Householder form), ``lambda = |q| / |x|``.
    Shapes: ``x, q [N, D] -> [N, D]``.
    """
    xn = x.norm(dim=-1, keepdim=True).clamp_min(eps)
    qn = q.norm(dim=-1, keepdim=True).clamp_min(eps)
    u = (x / xn).detach()
    v = (q / qn).detach()
    w = F.normalize(u + v, dim=-1, eps=eps).detach()
    rotated = x - 2 * (x * w).sum(-1, keepdim=True) * w + 2 * (x * u).sum(-1, keepdim=True) * v
    return rotated * (qn / xn).detach()


class VectorQuantizer(Quantizer):
    """Nearest-code vector quantizer with every codebook-collapse remedy as a switch.

    Args:
        dim: token dimension ``D``.
        n_codes: codes ``K`` (initial size when ``grow_to`` is set).
        beta: commitment weight. Default 0.5 (0.25 before 2026-12-03: a stiffer pull of the encoder onto
            its codes ends runs higher and steadier, docs/benchmarks-quality.md).
        ema_decay: EMA decay of codebook statistics. Default 0.99.
        update: ``"ema"`` (codebook follows EMA means) or ``"gradient"`` (codebook loss). Default "ema".
        codebook_lr: separate learning rate for a gradient-updated codebook (read by the trainer via
            ``codebook_lr`` / :meth:`codebook_parameters`). Default None.
        init: ``"kmeans"`` (on the first training batches) or ``"random"``. Default "kmeans".
        kmeans_iters: Lloyd iterations per init batch. Default 10.
        kmeans_batches: training batches the k-means init runs over. Default 1.
        restart: ``"batch"`` (re-seed dead codes from current encoder outputs), ``"replay"`` (from a
            buffer of recent outputs) or ``"none"``. Default "batch".
        restart_interval: check for dead codes every N training steps. Default 1.
        restart_share: a code is dead when its EMA count falls below this fraction of the average
            code's count (the uniform share: tokens per EMA update / active codes), i.e. when it is
            chosen less than ``restart_share`` times as often as a uniformly used code. Scale-free:
            the same rule whether a step has more tokens than codes or far fewer. With 2048 tokens
            per step and 1024 codes, 0.5 is an EMA count of 1.0. Default 0.5.
        restart_threshold: absolute EMA count (per update) below which a code is dead; when set it
            replaces ``restart_share``. An absolute count re-seeds almost every code when a step has
            fewer tokens than codes (2048 tokens, 8192 codes: the average count is 0.25). Default None.
        restart_sampling: how dead codes pick their new value among the candidate encoder outputs:
            ``"error"`` draws outputs with probability proportional to their quantization error
            (squared distance to their code, as in k-means++ seeding), so new codes go where the
            codebook serves the data worst; ``"uniform"`` draws them uniformly. Default "error".
        replay_size: rows in the replay buffer (``restart="replay"``). Default 8192.
        ema_accumulate_steps: steps whose statistics are summed into each EMA update (small batches,
            gradient accumulation; counts then refer to the accumulated batch). Default 1.
        ema_tokens_per_code: an EMA update also waits until the accumulated statistics hold at least
            this many tokens per active code (on average), so each update moves a code by the mean of
            several tokens: 1.0 with 2048 tokens per step and 8192 codes updates every 4th step. 0
            updates every ``ema_accumulate_steps``. Default 0.0: on real image patches at K=8192,
            1.0 changed PSNR by less than the seed spread and kept 3 points fewer codes alive
            (docs/benchmarks-codebook.md).
        entropy_weight: ``lambda`` of ``KL(q(c) || uniform)`` on the soft batch code distribution. Default 0.
        cosine: l2-normalise tokens and codes (in the ``codebook_dim`` space), so the search is by
            cosine similarity. Default True: with ``codebook_dim=8`` this is ViT-VQGAN's factorised,
            l2-normalised lookup: on real image patches it kept the most of 8192 codes alive (95.6%
            against 89.7% for the classic lookup), within 0.2 dB of the classic lookup's PSNR
            (docs/benchmarks-codebook.md).
        codebook_dim: look codes up in this lower dimension through linear in/out projections
            (factorised codes, as in ViT-VQGAN): ``dim -> codebook_dim`` before the search and back
            after it. None, or a value >= ``dim``, searches in ``dim`` itself. Default 8: on real
            image patches it keeps more of a large codebook alive than a full-dimensional
            lookup (docs/benchmarks-codebook.md) and makes the search ``dim / 8`` times cheaper.
            ``cosine=False, codebook_dim=None`` is the classic VQ-VAE lookup.
        rotation_trick: rotation trick instead of the straight-through estimator. Default False.
        sample_temperature: sample codes from ``softmax(-d / T)`` while training. Default 0 (argmin).
        grow_to: grow the codebook to this many codes at ``grow_at_step`` (copies of live codes
            plus jitter). ``n_codes`` then reports ``grow_to``. Default None.
        grow_at_step: training step at which the codebook grows. Default 0.
        entropy_temperature: softmax temperature (on squared distances) of the entropy regulariser. Default 10.0.
        chunk_rows: rows per search chunk (peak memory ``chunk_rows * K``). Default None (automatic).

    Example:
        >>> vq = VectorQuantizer(dim=16, n_codes=64)
        >>> out = vq(torch.randn(2, 8, 8, 16))
        >>> out.quantized.shape, out.indices.shape
        (torch.Size([2, 8, 8, 16]), torch.Size([2, 8, 8]))
    """

    def __init__(self, dim: int, n_codes: int, beta: float = 0.5, ema_decay: float = 0.99,
                 update: str = "ema", codebook_lr: float | None = None, init: str = "kmeans",
                 kmeans_iters: int = 10, kmeans_batches: int = 1, restart: str = "batch",
                 restart_interval: int = 1, restart_share: float = 0.5, restart_threshold: float | None = None,
                 restart_sampling: str = "error", replay_size: int = 8192,
                 ema_accumulate_steps: int = 1, ema_tokens_per_code: float = 0.0,
                 entropy_weight: float = 0.0, cosine: bool = True,
                 codebook_dim: int | None = 8, rotation_trick: bool = False,
                 sample_temperature: float = 0.0, grow_to: int | None = None, grow_at_step: int = 0,
                 entropy_temperature: float = 10.0, chunk_rows: int | None = None) -> None:
        super().__init__()
        for name, value, allowed in (("update", update, ("ema", "gradient")), ("init", init, ("kmeans", "random")),
                                     ("restart", restart, ("batch", "replay", "none")),
                                     ("restart_sampling", restart_sampling, ("error", "uniform"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if dim < 1 or n_codes < 2:
            raise ValueError(f"need dim >= 1 and n_codes >= 2, got dim={dim}, n_codes={n_codes}")
        if not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
        if ema_accumulate_steps < 1 or ema_tokens_per_code < 0:
            raise ValueError(f"need ema_accumulate_steps >= 1 and ema_tokens_per_code >= 0, got "
                             f"{ema_accumulate_steps} and {ema_tokens_per_code}")
        if not 0.0 < restart_share <= 1.0:
            raise ValueError(f"restart_share must be in (0, 1], got {restart_share}")
        if restart_threshold is not None and restart_threshold < 0:
            raise ValueError(f"restart_threshold must be >= 0 (or None), got {restart_threshold}")
        if grow_to is not None and grow_to <= n_codes:
            raise ValueError(f"grow_to must exceed n_codes={n_codes}, got {grow_to}")
        self.dim, self.n_codebooks = dim, 1
        self.n_codes = grow_to or n_codes
        self.initial_codes = n_codes
        self.beta, self.ema_decay, self.update, self.codebook_lr = beta, ema_decay, update, codebook_lr
        self.init, self.kmeans_iters, self.kmeans_batches = init, kmeans_iters, kmeans_batches
        self.restart, self.restart_interval, self.restart_threshold = restart, restart_interval, restart_threshold
        self.restart_share, self.restart_sampling = restart_share, restart_sampling
        self.ema_tokens_per_code = ema_tokens_per_code
        self.ema_accumulate_steps, self.entropy_weight, self.cosine = ema_accumulate_steps, entropy_weight, cosine
        self.use_rotation_trick, self.sample_temperature = rotation_trick, sample_temperature
        self.grow_to, self.grow_at_step = grow_to, grow_at_step
        self.entropy_temperature, self.chunk_rows = entropy_temperature, chunk_rows
        cdim = dim if codebook_dim is None else min(codebook_dim, dim)
        self.codebook_dim = cdim
        self.project_in = nn.Linear(dim, cdim) if cdim != dim else nn.Identity()
        self.project_out = nn.Linear(cdim, dim) if cdim != dim else nn.Identity()

        k = self.n_codes
        embed = torch.empty(k, cdim).uniform_(-1.0 / k, 1.0 / k)  # original VQ-VAE init
        if cosine:
            embed = F.normalize(torch.randn(k, cdim), dim=-1)
        if update == "gradient":
            self.embed = nn.Parameter(embed)
        else:
            self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.ones(k))  # EMA of per-step counts
        self.register_buffer("embed_sum", embed.clone())  # EMA of per-step sums (ema update)
        self.register_buffer("pending", torch.zeros(k, cdim + 1))  # accumulated [count, sum] rows
        self.register_buffer("active", torch.arange(k) < n_codes)  # codes in use (grow_to)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("init_batches", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialised", torch.tensor(init == "random"))
        if restart != "none":  # drawn at the end of each step, used by the next step's restarts
            self.register_buffer("candidates", torch.zeros(k, cdim))
            self.register_buffer("has_candidates", torch.zeros((), dtype=torch.bool))
        if restart == "replay":
            self.register_buffer("replay", torch.zeros(replay_size, cdim))
            self.register_buffer("replay_weight", torch.zeros(replay_size))  # weight of each row; 0 = empty
            self.register_buffer("replay_filled", torch.zeros((), dtype=torch.long))
        self._init_seen = init == "random"  # Python cache of `initialised` (eager mode only)
        self.register_load_state_dict_post_hook(_clear_init_cache)
        self._register_load_state_dict_pre_hook(self._fill_missing_restart_state)

    # ------------------------------------------------------------------ public API
    def codebook(self) -> torch.Tensor:
        """The codes ``[K, codebook_dim]`` as searched (normalised when ``cosine``)."""
        return F.normalize(self.embed, dim=-1) if self.cosine else self.embed

    def codebook_parameters(self) -> list[nn.Parameter]:
        """Parameters that should get ``codebook_lr`` (the codebook when ``update="gradient"``)."""
        return [self.embed] if isinstance(self.embed, nn.Parameter) else []

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices ``[...]`` -> quantized vectors ``[..., dim]``."""
        if indices.dtype not in (torch.long, torch.int32, torch.int64):
            raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
        return self.project_out(F.embedding(indices, self.codebook()))

    # ------------------------------------------------------------------ forward
    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize tokens ``z [..., dim]``; see :class:`~ndvq.quantizers.base.QuantizerOutput`."""
        self.check_input(z)
        lead = z.shape[:-1]
        x = self.project_in(z).reshape(-1, self.codebook_dim).float()  # [..., D] -> [N, Dc]
        if self.cosine:
            x = F.normalize(x, dim=-1)
        if self.training:
            self._maybe_init(x.detach())
            self._grow()
            if self.restart != "none":
                self._restart()
        temperature = self.sample_temperature if self.training else 0.0
        codebook = self.codebook()
        idx = nearest_codes(x, codebook, mask=self.active, chunk_rows=self.chunk_rows, temperature=temperature)
        q = F.embedding(idx, codebook)  # [N, Dc]

        commitment = F.mse_loss(x, q.detach())
        loss = self.beta * commitment
        losses = {"commitment": commitment.detach()}
        if self.update == "gradient":
            codebook_loss = F.mse_loss(q, x.detach())
            loss = loss + codebook_loss
            losses["codebook"] = codebook_loss.detach()
        if self.entropy_weight > 0 and self.training:
            # clone an EMA codebook: autograd saves it and the EMA update below writes it in place
            codes = codebook if self.update == "gradient" else codebook.clone()
            probs = soft_code_distribution(x, codes, self.entropy_temperature, self.active, self.chunk_rows)
            n_active = self.active.sum().float()
            kl = (probs * probs.clamp_min(1e-10).log()).sum() + n_active.log()  # KL(q || uniform)
            loss = loss + self.entropy_weight * kl
            losses["entropy"] = kl.detach()

        out = rotation_trick(x, q) if self.use_rotation_trick else straight_through(x, q)
        quantized = self.project_out(out.to(z.dtype)).reshape(*lead, self.dim)  # [N, D] -> [..., D]

        # counts via index_add, not bincount: bincount's output shape depends on the data (graph break)
        counts = x.new_zeros(self.n_codes).index_add_(0, idx, torch.ones_like(idx, dtype=x.dtype))  # [K]
        if self.training:
            counts = self._update_statistics(x.detach(), idx, counts)
            if self.restart != "none":  # for the next step's restarts, weighted by this step's errors
                error = (x.detach() - q.detach()).pow(2).sum(dim=1)  # [N, Dc] -> [N]
                self._draw_candidates(x.detach(), error)
        perplexity, _ = usage_from_counts(counts[None])
        usage = (counts > 0).float().sum() / self.active.float().sum()
        return QuantizerOutput(quantized=quantized, indices=idx.reshape(lead), loss=loss,
                               commitment_loss=commitment, perplexity=perplexity.detach(),
                               usage=usage.detach(), counts=counts[None].detach(), losses=losses)

    # ------------------------------------------------------------------ state updates (training only)
    @torch.no_grad()
    def _maybe_init(self, x: torch.Tensor) -> None:
        """k-means initialisation over the first ``kmeans_batches`` training batches."""
        if self.init != "kmeans":
            return
        operands = (x, self.embed.detach(), self.cluster_size, self.embed_sum, self.init_batches)
        if torch.compiler.is_compiling():
            embed, size, total, batches = torch.cond(self.initialised, _kmeans_skip, self._kmeans_run, operands)
        else:
            if self._init_seen or bool(self.initialised):
                self._init_seen = True
                return
            embed, size, total, batches = self._kmeans_run(*operands)
        self.embed.copy_(embed)
        self.cluster_size.copy_(size)
        self.embed_sum.copy_(total)
        self.init_batches.copy_(batches)
        self.initialised.copy_(batches >= self.kmeans_batches)

    def _kmeans_run(self, x, embed, size, total, batches):
        """Lloyd iterations on this batch merged with earlier init batches; returns new state."""
        k = embed.shape[0]
        first = batches == 0
        start = sync_rows_(kmeans_seed(x, k, chunk_rows=self.chunk_rows), self.training)
        if self.cosine:
            start = F.normalize(start, dim=-1)
        centroids = torch.where(first, start, embed)
        prior_w = batches.float()
        batch_sum, batch_count = total, size
        for it in range(max(1, self.kmeans_iters)):
            reseed = sync_rows_(sample_rows(x, k, offset=it + 1, jitter=JITTER), self.training)
            centroids, batch_sum, batch_count = lloyd_update(
                x, centroids, total, size, prior_w, reseed, self.training, self.chunk_rows, self.cosine)
        new_size = (prior_w * size + batch_count) / (prior_w + 1)  # per-batch mean count
        new_total = centroids * new_size.unsqueeze(1)
        return centroids, new_size, new_total, batches + 1

    def _dead_threshold(self, size: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """EMA count below which an active code is dead (scalar tensor, identical on every rank)."""
        if self.restart_threshold is not None:
            return size.new_tensor(float(self.restart_threshold))
        share = (size * active).sum() / active.sum().clamp_min(1)  # the average active code's count
        return self.restart_share * share

    def _fresh_count(self, threshold: torch.Tensor) -> torch.Tensor:
        """EMA count a re-seeded or newly grown code starts with: twice the dead threshold, so it has
        ``log(2) / -log(ema_decay)`` steps (69 at 0.99) to win tokens before it can be re-seeded again."""
        if self.restart_threshold is not None:
            return 2.0 * threshold.clamp_min(1.0)
        return 2.0 * threshold

    @torch.no_grad()
    def _grow(self) -> None:
        """Activate the ``grow_to`` codes at ``grow_at_step`` (once): copies of live codes plus jitter."""
        if self.grow_to is None:
            return
        k = self.n_codes
        embed, size, total, active = self.embed.detach(), self.cluster_size, self.embed_sum, self.active
        grow = (self.step == self.grow_at_step) & self.initialised
        threshold = self._dead_threshold(size, active)
        n_live = (active & (size >= threshold)).sum().clamp_min(1)
        order = torch.argsort(torch.where(active, size, torch.full_like(size, -1.0)), descending=True)
        src = order[torch.remainder(torch.arange(k, device=embed.device), n_live)]  # live codes, most used first
        scale = embed.std(dim=0, keepdim=True)
        jitter = sync_rows_(torch.randn_like(embed) * 0.01 * scale, self.training)
        new_codes = (grow & ~active).unsqueeze(1)  # [K, 1]
        embed = torch.where(new_codes, embed[src] + jitter, embed)
        # new codes start at the grown codebook's average count (the share it will settle to)
        active = active | grow
        fresh = (size * self.active).sum() / active.sum().clamp_min(1)
        size = torch.where(new_codes.squeeze(1), fresh.expand_as(size), size)
        total = torch.where(new_codes, embed * fresh, total)
        self.embed.copy_(embed)
        self.cluster_size.copy_(size)
        self.embed_sum.copy_(total)
        self.active.copy_(active)

    @torch.no_grad()
    def _draw_candidates(self, x: torch.Tensor, error: torch.Tensor) -> None:
        """Draw ``K`` new values for dead codes from this step's tokens (or the replay buffer) into the
        ``candidates`` buffer; :meth:`_restart` uses them at the start of the next step.

        ``x [N, Dc]`` are the searched-space tokens, ``error [N]`` their squared distance to the chosen
        code. Drawing here reuses the search's result (no second search); re-seeding waits for the next
        step because a gradient-updated codebook may not change in place after the forward used it.
        """
        # never re-seed from a non-finite output: a NaN or inf entry makes the token's squared error
        # non-finite too, so checking the [N] errors covers the [N, Dc] tokens at a Dc-th of the cost
        finite = torch.isfinite(error)
        if self.restart_sampling == "error":  # + a floor: tokens sitting exactly on a code stay drawable
            weight = torch.where(finite, error + 1e-12, torch.zeros_like(error))
        else:
            weight = finite.to(x.dtype)
        source = x
        if self.restart == "replay":
            source, weight = self._push_replay(x, weight)
        cand = sync_rows_(weighted_rows(source, weight, self.n_codes), self.training)  # [K, Dc], same on all ranks
        if self.cosine:
            cand = F.normalize(cand, dim=-1)
        self.candidates.copy_(cand)
        self.has_candidates.fill_(True)

    @torch.no_grad()
    def _restart(self) -> None:
        """Re-seed dead codes from ``candidates`` on steps ``0, restart_interval, 2 * restart_interval, ...``
        (once candidates exist: from the second training step on)."""
        size, active, cand = self.cluster_size, self.active, self.candidates
        threshold = self._dead_threshold(size, active)
        due = (torch.remainder(self.step, self.restart_interval) == 0) & self.initialised & self.has_candidates
        dead = (active & (size < threshold) & due).unsqueeze(1)  # [K, 1]
        dead = dead & torch.isfinite(cand).all(dim=1, keepdim=True)
        fresh = self._fresh_count(threshold)
        self.embed.copy_(torch.where(dead, cand, self.embed.detach()))
        self.cluster_size.copy_(torch.where(dead.squeeze(1), fresh.expand_as(size), size))
        self.embed_sum.copy_(torch.where(dead, cand * fresh, self.embed_sum))
        self.pending.copy_(torch.where(dead, torch.zeros_like(self.pending), self.pending))  # old tokens' stats

    def _push_replay(self, x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write random rows of ``x`` (and their sampling weights) into the ring buffer; return the buffer
        and its weights (empty rows weigh 0, so they are never drawn)."""
        r = self.replay.shape[0]
        n = min(r, x.shape[0])
        pos = torch.remainder(self.replay_filled + torch.arange(n, device=x.device), r)
        rows = torch.randint(0, x.shape[0], (n,), device=x.device)
        picked, picked_weight = x.index_select(0, rows), weight.index_select(0, rows)
        # non-finite rows weigh 0 (never drawn); store them as zeros so the buffer stays finite
        self.replay.index_copy_(0, pos, torch.where(picked_weight.unsqueeze(1) > 0, picked, torch.zeros_like(picked)))
        self.replay_weight.index_copy_(0, pos, picked_weight)
        self.replay_filled.add_(n)
        return self.replay, self.replay_weight

    @torch.no_grad()
    def _update_statistics(self, x: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """All-reduce batch statistics and accumulate them; apply an EMA update every
        ``ema_accumulate_steps`` once they hold ``ema_tokens_per_code`` tokens per active code.
        Returns the global counts of this step."""
        stats = x.new_zeros(self.n_codes, self.codebook_dim + 1)  # [K, 1 + Dc]: count, sum
        stats[:, 0] = counts
        if self.update == "ema":
            stats[:, 1:].index_add_(0, idx, x)
        all_reduce_(stats, self.training)
        counts = stats[:, 0].clone()
        # a non-finite batch (a diverging encoder; the trainer skips its optimizer step) must not poison
        # the EMA statistics: it is left out on the device, without a host sync
        finite = torch.isfinite(stats).all()
        self.pending.add_(torch.where(finite, stats, torch.zeros_like(stats)))
        acc = self.pending  # summed over the accumulated steps: one update sees one larger batch
        enough = acc[:, 0].sum() >= self.ema_tokens_per_code * self.active.sum()
        apply = (torch.remainder(self.step + 1, self.ema_accumulate_steps) == 0) & enough & self.initialised & finite
        d = self.ema_decay
        size = torch.where(apply, d * self.cluster_size + (1 - d) * acc[:, 0], self.cluster_size)
        self.cluster_size.copy_(size)
        if self.update == "ema":
            total = torch.where(apply, d * self.embed_sum + (1 - d) * acc[:, 1:], self.embed_sum)
            self.embed_sum.copy_(total)
            new = total / size.clamp_min(1e-5).unsqueeze(1)
            if self.cosine:
                new = F.normalize(new, dim=-1)
            self.embed.copy_(torch.where(apply & self.active.unsqueeze(1), new, self.embed))
        self.pending.copy_(torch.where(apply | ~self.initialised, torch.zeros_like(self.pending), self.pending))
        self.step.add_(1)
        return counts

    def _fill_missing_restart_state(self, state_dict, prefix, *args) -> None:
        """Checkpoints from before error-weighted restarts (ndvq 0.1.0 of 2026-11-22) lack the restart
        candidates and replay weights: load them as "no candidates yet" and uniform weights."""
        if self.restart == "none" or prefix + "embed" not in state_dict:
            return
        state_dict.setdefault(prefix + "candidates", torch.zeros_like(self.candidates))
        state_dict.setdefault(prefix + "has_candidates", torch.zeros_like(self.has_candidates))
        if self.restart == "replay" and prefix + "replay_filled" in state_dict:
            filled = state_dict[prefix + "replay_filled"]
            state_dict.setdefault(prefix + "replay_weight",
                                  (torch.arange(self.replay.shape[0]) < filled).to(self.replay_weight.dtype))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, n_codes={self.n_codes}, codebook_dim={self.codebook_dim}, update={self.update}, "
                f"init={self.init}, restart={self.restart}, cosine={self.cosine}")


def _kmeans_skip(x, embed, size, total, batches):
    return embed.clone(), size.clone(), total.clone(), batches.clone()


def _clear_init_cache(module: VectorQuantizer, incompatible_keys) -> None:
    module._init_seen = False

