"""The doctor's rules and the one table of thresholds they use.

Every rule is a function ``rule(view, th) -> Finding | None`` that reads a
:class:`~ndvq.diagnostics.view.RunView` (the run's metrics as arrays, its resolved config and its
model's facts: codebook sizes, downsampling, constructor arguments) and the :class:`Thresholds`. Rules
only look at numbers that ``metrics.jsonl`` already holds (names in docs/design.md), so they
work on a running run, a finished run and inside the training loop at every validation.

All numbers a rule compares against live in :class:`Thresholds` (one field each, with its
meaning in ``metadata["doc"]``); ``thresholds_table()`` renders them as the Markdown table in
docs/tuning.md. Fixes are ``key=value`` overrides for ``ndvq train`` whose keys exist in
:class:`ndvq.config.Config` under their current names (tests validate every fix the rules can emit).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np

from ndvq.diagnostics.view import (
    SEVERITIES,
    Finding,
    RunView,
    Series,
    _over,
    _smooth,
    _steps,
    fmt_kv,
    fmt_num,
)
from ndvq.quantizers import default_beta
from ndvq.quantizers.residual import unit_length_lookup

__all__ = [
    "SEVERITIES",
    "Finding",
    "Thresholds",
    "Series",
    "RunView",
    "RULES",
    "thresholds_table",
    "fmt_kv",
]


#: No collapse finding while the recent window usage (share of codes used) is at least this: low
#: perplexity with a used codebook is a skewed code distribution (silence, padding), not collapse.
COLLAPSE_USAGE = 0.5
#: Train/val mismatch: val recon above this multiple of train recon at the first validation while the
#: train loss falls smoothly.
MISMATCH_RATIO = 20.0


def _t(default: float, doc: str):
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Thresholds:
    """Every threshold the doctor uses. Change one with ``Thresholds(collapse_ratio=0.01)``."""

    min_records: int = _t(5, "train records needed before any rule but non-finite/out-of-memory runs")
    warmup_fraction: float = _t(0.2, "first fraction of logged steps (at least train.warmup_steps) ignored by codebook, stability and trend rules")
    window_fraction: float = _t(0.25, "the 'recent' window: last fraction of logged steps")
    collapse_ratio: float = _t(0.02, "critical: recent perplexity below this fraction of n_codes (codebook collapse)")
    collapse_perplexity: float = _t(2.5, "critical: recent perplexity below this absolute value is collapse whatever n_codes is")
    low_perplexity_ratio: float = _t(0.10, "warning: recent perplexity below this fraction of n_codes")
    high_perplexity_ratio: float = _t(0.90, "info: recent perplexity above this fraction of n_codes (codebook saturated)")
    dead_growth: float = _t(0.10, "warning: dead codes grew by more than this fraction of n_codes after warm-up ...")
    dead_fraction: float = _t(0.25, "... and end above this fraction of n_codes")
    commitment_high: float = _t(1.0, "warning: quantizer.beta*commitment_loss / recon_loss (recent medians) above this")
    commitment_rise: float = _t(3.0, "warning: commitment loss rose this many times above its post-warm-up minimum ...")
    commitment_rise_share: float = _t(0.25, "... while quantizer.beta*commitment / recon is above this")
    commitment_low: float = _t(1e-3, "warning: quantizer.beta*commitment_loss / recon_loss below this (too weak)")
    commitment_cv: float = _t(0.5, "warning: std/median of the recent commitment loss above this (unstable)")
    spike_factor: float = _t(3.0, "a train loss above this multiple of the running median of the records before it is a spike")
    spike_count: int = _t(3, "warning: at least this many spikes after warm-up (instability)")
    divergence_factor: float = _t(1.5, "critical: smoothed recent train loss above this multiple of its post-warm-up minimum (diverging)")
    blowup_factor: float = _t(100.0, "critical: the train loss peaked above this multiple of its recent median ...")
    blowup_abs: float = _t(100.0, "... and above this absolute value (sane losses on data scaled to [-1, 1] or z-scored stay far below)")
    psnr_trivial: float = _t(6.0, "critical: recent val PSNR (dB) below this is worse than predicting zeros for data in [-1, 1] (training blew up)")
    plateau: float = _t(0.02, "a loss is flat when it improved by less than this fraction across the recent window")
    still_improving: float = _t(0.10, "a loss is still falling fast when it improved by more than this fraction across the recent window")
    psnr_low: float = _t(20.0, "validation PSNR (dB) below this counts as a high reconstruction loss")
    not_learned: float = _t(0.5, "without PSNR: recent recon loss above this fraction of the first logged one counts as high")
    overfit_val_rise: float = _t(0.05, "overfitting: val recon rose by more than this fraction above its minimum ...")
    overfit_train_drop: float = _t(0.05, "... while train recon fell by more than this fraction over the same steps")
    overfit_flat_train_drop: float = _t(0.10, "overfitting (flat variant): train recon fell by more than this over the last half of validations while val moved less than `plateau`")
    gap_ratio: float = _t(2.0, "warning: val recon of the last validations above this multiple of train recon over the same steps")
    lr_constant: float = _t(1.01, "the LR counts as never decayed when max/min of the logged lr after warm-up is below this")
    nonfinite_critical: float = _t(0.01, "critical: non-finite steps above this fraction of steps (or a non-finite logged loss)")
    kl_share_high: float = _t(0.1, "KL-VAE blurry: kl_weight*kl_loss / recon_loss above this means the KL weight dominates")
    blurry_psnr: float = _t(25.0, "KL-VAE blurry: validation PSNR (dB) below this while recon is flat")
    kl_share_low: float = _t(1e-4, "KL-VAE unstructured latent: kl_weight*kl_loss / recon_loss below this ...")
    kl_growth: float = _t(10.0, "... while kl_loss grew this many times above its post-warm-up minimum")


def thresholds_table(th: Thresholds | None = None) -> str:
    """The thresholds as a Markdown table (name, value, meaning)."""
    th = th or Thresholds()
    rows = ["| threshold | value | meaning |", "|---|---|---|"]
    for f in fields(th):
        rows.append(f"| `{f.name}` | {getattr(th, f.name):g} | {f.metadata['doc']} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- fix builders


def _lower_lr(view: RunView, factor: float = 3.0) -> str:
    return fmt_kv("train.learning_rate", float(view.cfg("train.learning_rate", 3e-4)) / factor)


def _warmup(view: RunView) -> str:
    """A linear warm-up over ~5% of the run (at most 500 steps)."""
    ms = view.cfg("train.max_steps") or 10000
    return fmt_kv("train.warmup_steps", int(max(1, min(500, int(ms) // 20))))


def _bigger_batch(view: RunView) -> str:
    return fmt_kv("train.batch_size", int(view.cfg("train.batch_size", 32)) * 2)


def _capacity_fixes(view: RunView) -> list[str]:
    if view.backbone == "ldm":
        ch = list(view.cfg("model.ldm.channels", [64, 128, 256]))
        return [
            fmt_kv("model.ldm.channels", [c * 2 for c in ch]),
            fmt_kv("model.ldm.num_res_blocks", int(view.cfg("model.ldm.num_res_blocks", 2)) + 1),
            fmt_kv("model.embedding_dim", view.embedding_dim * 2),
        ]
    out = [fmt_kv("model.videogpt.n_hiddens", int(view.cfg("model.videogpt.n_hiddens", 128)) * 2),
           fmt_kv("model.videogpt.num_res_blocks", int(view.cfg("model.videogpt.num_res_blocks", 2)) + 1)]
    ds = list(view.facts.get("downsample") or view.cfg("model.videogpt.downsample", [4, 4]))
    if max(ds) > 1:
        out.append(fmt_kv("model.videogpt.downsample", [max(1, d // 2) for d in ds]))
    return out


def _full_dim_lookup(view, dim: int) -> bool:
    """Whether the run's vector quantizer searches in the full embedding dimension (no low-dim lookup)."""
    cd = view.cfg("model.quantizer.codebook_dim")
    return cd is None or int(cd) >= dim


def _codebook_rescue_fixes(view: RunView) -> list[str]:
    """Ranked fixes for a collapsing VQ codebook (one change at a time)."""
    q, out = view.bottleneck, []
    if q == "fsq":
        levels = list(view.cfg("model.quantizer.fsq_levels", [8, 5, 5, 5]))
        return [fmt_kv("model.quantizer.fsq_levels", [max(2, lv // 2) for lv in levels]), _lower_lr(view)]
    if q == "lfq":
        w = float(view.cfg("model.quantizer.lfq_entropy_weight", 0.1))
        return [fmt_kv("model.quantizer.lfq_entropy_weight", max(0.1, w * 3)), _lower_lr(view)]
    if view.cfg("model.quantizer.restart", "batch") == "none":
        out.append(fmt_kv("model.quantizer.restart", "batch"))
    if view.cfg("model.quantizer.init", "kmeans") == "random":
        out.append(fmt_kv("model.quantizer.init", "kmeans"))
    if view.cfg("model.quantizer.update", "ema") == "gradient" and q in ("vq", "residual", "grouped"):
        out.append(fmt_kv("model.quantizer.update", "ema"))
    dim = view.embedding_dim
    if _full_dim_lookup(view, dim) and dim > 8:
        out.append(fmt_kv("model.quantizer.codebook_dim", 8))
    # each fix is tried alone: cosine in a residual model's own latent would give unit-length levels
    unit_levels = q == "residual" and unit_length_lookup(True, view.cfg("model.quantizer.codebook_dim"), dim)
    if not view.cfg("model.quantizer.cosine", False) and not unit_levels:
        out.append(fmt_kv("model.quantizer.cosine", True))
    if view.cfg("model.quantizer.restart", "batch") == "batch":
        out.append(fmt_kv("model.quantizer.restart", "replay"))
    if float(view.cfg("model.quantizer.entropy_weight", 0.0)) == 0.0:
        out.append(fmt_kv("model.quantizer.entropy_weight", 0.1))
    n = view.n_codes
    if n >= 64:
        out.append(fmt_kv("model.n_codes", n // 4))
    out.append(fmt_kv("model.bottleneck", "fsq"))
    return out


# ----------------------------------------------------------------------------- rules


def rule_out_of_memory(view: RunView, th: Thresholds) -> Finding | None:
    hits = [e for e in view.errors if "out of memory" in e.lower() or "outofmemory" in e.lower()]
    if not hits:
        return None
    bs = int(view.cfg("train.batch_size", 32))
    fixes = [fmt_kv("train.batch_size", max(1, bs // 2))]
    if view.backbone == "ldm":
        ch = list(view.cfg("model.ldm.channels", [64, 128, 256]))
        fixes.append(fmt_kv("model.ldm.channels", [max(view.cfg("model.ldm.norm_num_groups", 32), c // 2) for c in ch]))
    else:
        fixes.append(fmt_kv("model.videogpt.n_hiddens", max(2, int(view.cfg("model.videogpt.n_hiddens", 128)) // 2)))
    patch = view.cfg("data.patch_size") or view.cfg("data.resolution")
    if patch:
        fixes.append(fmt_kv("data.patch_size" if view.cfg("data.patch_size") else "data.resolution", [max(8, p // 2) for p in patch]))
    if view.backbone == "ldm":
        levels = view.cfg("model.ldm.attention_levels", [])
        if any(levels):
            fixes.append(fmt_kv("model.ldm.attention_levels", [False] * len(levels)))
        fixes += [fmt_kv("model.ldm.with_encoder_nonlocal_attn", False), fmt_kv("model.ldm.with_decoder_nonlocal_attn", False)]
    elif int(view.cfg("model.videogpt.n_head", 2)):
        fixes.append(fmt_kv("model.videogpt.n_head", 0))
    if view.cfg("train.precision", "32") in ("32", "32-true"):
        fixes.append(fmt_kv("train.precision", "bf16-mixed"))
    return Finding(
        "critical", "Out of memory",
        f"the run stopped with an out-of-memory error at step {int(view.last_step)}: {hits[-1].strip()[:160]}",
        "activations of one batch do not fit in device memory; memory grows with batch size, channel widths, "
        "patch size and attention (in that order of ease to change)",
        fixes, "out_of_memory")


def rule_nonfinite(view: RunView, th: Thresholds) -> Finding | None:
    tr = view.train
    count, step_of = 0.0, None
    if tr.has("nonfinite_steps"):
        st, v = tr.get("nonfinite_steps")
        count = float(v.max())
        nz = st[v > 0]
        step_of = nz[0] if len(nz) else None
    bad_loss = sorted({int(s) for split in (view.train, view.val) for name in ("loss", "recon_loss")
                       for s in split.nonfinite_steps(name)})
    if count <= 0 and not bad_loss:
        return None
    total = max(1.0, view.last_step - view.first_step + 1)
    frac = count / total
    severe = bool(bad_loss) or frac > th.nonfinite_critical
    parts = []
    if count > 0:
        parts.append(f"{int(count)} non-finite training steps (loss or gradient NaN/inf, step skipped) "
                     f"= {100 * frac:.3g}% of {int(total)} steps, first logged at step {int(step_of if step_of is not None else view.last_step)}")
    if bad_loss:
        parts.append(f"a logged loss is NaN/inf at step(s) {', '.join(str(int(s)) for s in bad_loss[:5])}")
    fixes = [_lower_lr(view, 10.0 if severe else 3.0)]
    if view.continuous:
        fixes.append(fmt_kv("loss.kl_weight", float(view.cfg("loss.kl_weight", 1e-6)) / 10))
    clip = view.cfg("train.grad_clip")
    fixes.append(fmt_kv("train.grad_clip", 0.5 if clip is None else min(0.5, float(clip) / 2)))
    if view.cfg("train.precision", "32") == "16-mixed":
        fixes.append(fmt_kv("train.precision", "bf16-mixed"))
    if int(view.cfg("train.warmup_steps", 0)) == 0:
        fixes.append(_warmup(view))
    cause = ("the learning rate (or the KL weight) is too high for this model: activations or the KL term overflow"
             if view.continuous else
             "updates too large for the loss surface (learning rate too high, no warm-up) or fp16 overflow")
    return Finding("critical" if severe else "warning", "Non-finite steps (NaN/inf)", "; ".join(parts), cause, fixes, "nonfinite")


def _usage(view: RunView) -> float:
    """Recent median window usage (share of codes used), NaN when not logged."""
    return view.recent_median("train", "window_usage") if view.train.has("window_usage") else math.nan


def _skew_cause(view: RunView) -> str:
    """Why a few codes take most tokens while the codebook is in use."""
    kind = view.cfg("data.kind", "")
    what = {"audio": "silence and zero padding", "series": "padding and flat stretches",
            "volume": "background and padding", "image": "flat background and padding"}.get(kind, "a few common patterns")
    return (f"a few codes take most tokens because {what} look alike; the rest of the codebook is in use "
            f"(not a collapse). Shorter windows / patches that fit the data cut the padding")


def rule_collapse(view: RunView, th: Thresholds) -> Finding | None:
    if view.continuous or not view.train.has("perplexity") or len(view.train) < th.min_records:
        return None
    st, p = view.recent("train", "perplexity")
    if view.warm_end >= view.last_step or not len(p):
        return None
    perp, n = float(np.median(p)), view.n_codes
    ratio = perp / n
    if ratio >= th.collapse_ratio and perp >= th.collapse_perplexity:
        return None
    usage = _usage(view)
    if math.isfinite(usage) and usage >= COLLAPSE_USAGE:
        return None  # the codebook is used: rule_perplexity reports the skew (never a critical collapse)
    extra = f"; window usage {100 * usage:.3g}% of codes" if math.isfinite(usage) else ""
    return Finding(
        "critical", "Codebook collapse",
        f"perplexity {perp:.3g} of {n} codes ({100 * ratio:.3g}%) {_over(view, st)}{extra}",
        "the encoder maps almost everything onto a handful of codes; the rest of the codebook never gets "
        "updated (dead codes)" + ("" if not _full_dim_lookup(view, view.embedding_dim) or view.embedding_dim <= 8
                                  else ", typically from a large codebook with a high-dimensional nearest-neighbour lookup")
        + ("" if view.cfg("model.quantizer.restart", "batch") != "none" else " and no dead-code restarts"),
        _codebook_rescue_fixes(view), "collapse")


def rule_divergence(view: RunView, th: Thresholds) -> Finding | None:
    """Instability: loss spikes or a loss that climbs back up after warm-up."""
    if len(view.train) < th.min_records:
        return None
    st, v = view.train.get("loss", view.warm_end)
    if len(v) < th.min_records:
        return None
    sm = _smooth(v)
    i_min = int(np.argmin(sm))
    rs = view.recent_start
    diverged = st[i_min] < rs and sm[-1] > th.divergence_factor * sm[i_min] and sm[i_min] > 0
    # spikes: v[i] > spike_factor * median(v[i-k:i])
    spikes = [int(x) for x in st[_spike_index(v, th)]]
    _, allv = view.train.get("loss")
    recent = view.recent_median("train", "loss")
    i_peak = int(np.argmax(allv))
    blowup = bool(allv[i_peak] > th.blowup_factor * recent and allv[i_peak] > th.blowup_abs)
    psnr = view.recent_median("val", "psnr") if view.val.has("psnr") else math.nan
    trivial = psnr < th.psnr_trivial and not _train_falls_smoothly(view, th)  # else: rule_mismatch
    if not (diverged or blowup or trivial) and len(spikes) < th.spike_count:
        return None
    parts = []
    if blowup:
        peak_step = int(view.train.get("loss")[0][i_peak])
        parts.append(f"train loss exploded to {fmt_num(float(allv[i_peak]))} at step {peak_step} "
                     f"({allv[i_peak] / recent:.2g}x its recent median {fmt_num(recent)})")
    if trivial:
        parts.append(f"val PSNR {psnr:.3g} dB over the recent validations: worse than predicting zeros")
    if diverged:
        parts.append(f"train loss fell to {fmt_num(sm[i_min])} at step {int(st[i_min])} and climbed back to "
                     f"{fmt_num(sm[-1])} by step {int(st[-1])} ({sm[-1] / sm[i_min]:.2g}x, smoothed)")
    if spikes:
        parts.append(f"{len(spikes)} loss spikes above {th.spike_factor:g}x the running median after warm-up "
                     f"(steps {', '.join(map(str, spikes[:6]))}{', ...' if len(spikes) > 6 else ''})")
    lr = float(view.cfg("train.learning_rate", 3e-4))
    severe = diverged or blowup or trivial
    fixes = [fmt_kv("train.learning_rate", min(lr / 10, 1e-3)) if severe else _lower_lr(view), _bigger_batch(view)]
    clip = view.cfg("train.grad_clip")
    if clip is None or float(clip) > 0.5:
        fixes.append(fmt_kv("train.grad_clip", 0.5))
    if int(view.cfg("train.warmup_steps", 0)) == 0:
        fixes.append(_warmup(view))
    return Finding("critical" if severe else "warning", "Training is unstable", "; ".join(parts),
                   "the learning rate is too high for this batch size (noisy, oversized updates)", fixes, "instability")


def rule_dead_codes(view: RunView, th: Thresholds) -> Finding | None:
    if view.continuous or not view.train.has("dead_codes") or len(view.train) < th.min_records:
        return None
    st, v = view.train.get("dead_codes", view.warm_end)
    if len(v) < 2:
        return None
    n = view.n_codes
    k = max(1, len(v) // 5)
    start, end = float(np.median(v[:k])), float(np.median(v[-k:]))
    if (end - start) <= th.dead_growth * n or end <= th.dead_fraction * n:
        return None
    fixes = []
    if view.cfg("model.quantizer.restart", "batch") == "none":
        fixes.append(fmt_kv("model.quantizer.restart", "batch"))
    elif view.cfg("model.quantizer.restart", "batch") == "batch":
        fixes.append(fmt_kv("model.quantizer.restart", "replay"))
    thr = view.cfg("model.quantizer.restart_threshold", None)
    if thr is not None:  # an absolute count: recycle rarer codes (or use the scale-free rule, below)
        fixes.append(fmt_kv("model.quantizer.restart_threshold", max(float(thr) * 2, 0.5)))
    else:
        share = float(view.cfg("model.quantizer.restart_share", 0.5))
        if share < 0.9:
            fixes.append(fmt_kv("model.quantizer.restart_share", round(min(share * 1.5, 0.9), 2)))
    if view.cfg("model.quantizer.restart_sampling", "error") == "uniform":
        fixes.append(fmt_kv("model.quantizer.restart_sampling", "error"))
    fixes.append(fmt_kv("model.quantizer.ema_decay", 0.95 if float(view.cfg("model.quantizer.ema_decay", 0.99)) > 0.95 else 0.9))
    if n >= 64:
        fixes.append(fmt_kv("model.n_codes", n // 2))
    return Finding(
        "warning", "Dead codes are growing",
        f"dead codes grew from {start:.0f} to {end:.0f} of {n} ({100 * end / n:.3g}%) between steps {int(st[0])} and {int(st[-1])}",
        "codes that stop being chosen drift away from the encoder outputs and are not being replaced fast enough",
        fixes, "dead_codes")


def rule_commitment(view: RunView, th: Thresholds) -> Finding | None:
    if view.continuous or view.bottleneck == "fsq" or not view.train.has("commitment_loss") or len(view.train) < th.min_records:
        return None
    beta = view.cfg("model.quantizer.beta")
    beta = float(default_beta(view.bottleneck) if beta is None else beta)  # null: the kind's default
    st, c = view.recent("train", "commitment_loss")
    recon = view.recent_median("train", view.recon_name)
    if not len(c) or not math.isfinite(recon) or recon <= 0:
        return None
    cm = float(np.median(c))
    share = beta * cm / recon
    _, post = view.train.get("commitment_loss", view.warm_end)
    cmin = float(post.min()) if len(post) else cm
    rising = cmin > 0 and cm > th.commitment_rise * cmin and share > th.commitment_rise_share
    if share > th.commitment_high or rising:
        obs = f"beta*commitment = {beta:g}*{fmt_num(cm)} = {fmt_num(beta * cm)} vs recon loss {fmt_num(recon)} ({share:.2g}x) {_over(view, st)}"
        if rising:
            obs += f"; commitment rose {cm / cmin:.2g}x above its minimum {fmt_num(cmin)}"
        return Finding("warning", "Commitment loss too high", obs,
                       "the encoder is pulled towards the codebook harder than it is pushed to reconstruct "
                       "(model.quantizer.beta too high), or encoder outputs move faster than the codebook follows",
                       [fmt_kv("model.quantizer.beta", beta / 2), fmt_kv("model.quantizer.beta", beta / 4), _lower_lr(view, 2.0)],
                       "commitment_high")
    cv = float(np.std(c) / cm) if cm > 0 else 0.0
    if share < th.commitment_low or (cv > th.commitment_cv and len(c) >= th.min_records):
        what = (f"beta*commitment = {fmt_num(beta * cm)} is {share:.2g}x the recon loss {fmt_num(recon)}"
                if share < th.commitment_low else
                f"commitment loss fluctuates: std/median {cv:.2g} (median {fmt_num(cm)})")
        return Finding("warning", "Commitment loss too low or unstable", f"{what} {_over(view, st)}",
                       "encoder outputs are barely tied to the codebook, so they wander and code assignments keep changing",
                       [fmt_kv("model.quantizer.beta", min(2.0, max(beta * 2, 0.1))), fmt_kv("model.quantizer.beta", min(4.0, max(beta * 4, 0.25)))],
                       "commitment_low")
    return None


def rule_perplexity(view: RunView, th: Thresholds) -> Finding | None:
    if view.continuous or not view.train.has("perplexity") or len(view.train) < th.min_records:
        return None
    split = "val" if view.val.has("perplexity") else "train"
    st, p = view.recent(split, "perplexity")
    if not len(p):
        return None
    perp, n = float(np.median(p)), view.n_codes
    ratio = perp / n
    dim = view.embedding_dim
    if ratio < th.low_perplexity_ratio:
        usage = _usage(view)
        if math.isfinite(usage) and usage >= COLLAPSE_USAGE:
            return Finding("warning", "Few codes take most tokens",
                           f"{split} perplexity {perp:.3g} of {n} codes ({100 * ratio:.3g}%) {_over(view, st)} while "
                           f"the window usage is {100 * usage:.3g}% of codes", _skew_cause(view),
                           _padding_fixes(view), "low_perplexity")
        fixes = []
        high_dim = _full_dim_lookup(view, dim) and dim > 8
        if dim > 4 and high_dim:
            fixes.append(fmt_kv("model.embedding_dim", dim // 2))
        if view.bottleneck not in ("fsq", "lfq"):
            if high_dim:
                fixes.append(fmt_kv("model.quantizer.codebook_dim", 8))
            fixes.append(fmt_kv("model.n_codes", n * 2))
        else:
            fixes += _codebook_rescue_fixes(view)[:1]
        cause = ("few codes carry the information: the nearest-neighbour lookup in a high-dimensional "
                 "embedding space leaves most codes unused (checklist: more codes or a smaller embedding_dim)"
                 if high_dim else
                 "few codes carry the information: the data offer few distinct patterns per code position "
                 "(simple or padded items), or the codebook is larger than the data need")
        return Finding("warning", "Low perplexity",
                       f"{split} perplexity {perp:.3g} of {n} codes ({100 * ratio:.3g}%) {_over(view, st)}",
                       cause, fixes, "low_perplexity")
    if ratio > th.high_perplexity_ratio:
        fixes = [fmt_kv("model.embedding_dim", dim * 2)]
        if view.bottleneck not in ("fsq", "lfq") and n >= 8:
            fixes.insert(0, fmt_kv("model.n_codes", n // 2))
        return Finding("info", "Perplexity close to n_codes",
                       f"{split} perplexity {perp:.3g} of {n} codes ({100 * ratio:.3g}%) {_over(view, st)}",
                       "every code is used about equally: the codebook is saturated. Fewer codes give the same "
                       "usage with a smaller vocabulary (checklist: fewer codes or a larger embedding_dim)",
                       fixes, "high_perplexity")
    return None


def _recon_is_high(view: RunView, th: Thresholds) -> tuple[bool, str]:
    if view.val.has("psnr"):
        psnr = view.recent_median("val", "psnr")
        return psnr < th.psnr_low, f"val PSNR {psnr:.3g} dB"
    _, v = view.train.get(view.recon_name)
    if not len(v):
        return False, ""
    first, now = float(np.median(v[:3])), view.recent_median("train", view.recon_name)
    return (first > 0 and now > th.not_learned * first), f"recon loss at {100 * now / first:.3g}% of its first value {fmt_num(first)}"


def rule_recon_flat(view: RunView, th: Thresholds) -> Finding | None:
    if len(view.train) < th.min_records or view.continuous:
        return None
    name = view.recon_name
    drop, a, b, s0, s1 = view.improvement("train", name)
    if not math.isfinite(drop) or drop >= th.plateau:
        return None
    high, how = _recon_is_high(view, th)
    if not high:
        return None
    lr = float(view.cfg("train.learning_rate", 3e-4))
    fixes = _capacity_fixes(view)[:2] + [fmt_kv("train.learning_rate", lr * 3), _lower_lr(view)] + _capacity_fixes(view)[2:]
    return Finding("warning", "Reconstruction loss high and flat",
                   f"train {name} went from {fmt_num(a)} to {fmt_num(b)} ({-100 * drop:+.3g}%) between steps {int(s0)} and {int(s1)}; {how}",
                   "the model has stopped learning at a poor fit: too little capacity (width, depth, too much "
                   "downsampling) or a learning rate that is too low or too high",
                   fixes, "recon_flat")


def rule_overfitting(view: RunView, th: Thresholds) -> Finding | None:
    name = view.recon_name
    vst, vv = view.val.get(name, view.warm_end)
    tst, tv = view.train.get(name)
    if len(vv) < 3 or len(tv) < th.min_records:
        return None

    def train_at(step: float) -> float:
        near = np.abs(tst - step) <= max(1.0, 0.02 * (view.last_step - view.first_step))
        return float(np.median(tv[near])) if near.any() else float(np.interp(step, tst, tv))

    i_min = int(np.argmin(vv))
    fixes = []
    if view.backbone == "videogpt":  # the LDM backbone has no dropout
        p = float(view.cfg("model.videogpt.dropout", 0.0))
        fixes.append(fmt_kv("model.videogpt.dropout", 0.1 if p < 0.1 else min(0.5, p * 2)))
    if _can_augment(view):
        fixes.append(fmt_kv("data.augment", True))
    fixes.append(fmt_kv("train.weight_decay", max(1e-4, float(view.cfg("train.weight_decay", 0.0)) * 10)))
    fixes.append(fmt_kv("train.max_steps", max(1, int(vst[i_min]))))
    cause = "the model memorises the training set instead of learning features that transfer (too little data for its size or too long training)"
    if i_min < len(vv) - 1:
        rise = vv[-1] / vv[i_min] - 1
        t0, t1 = train_at(vst[i_min]), train_at(vst[-1])
        tdrop = (t0 - t1) / t0 if t0 else 0.0
        if rise > th.overfit_val_rise and tdrop > th.overfit_train_drop:
            return Finding("warning", "Overfitting",
                           f"val {name} rose from {fmt_num(vv[i_min])} at step {int(vst[i_min])} to {fmt_num(vv[-1])} at step {int(vst[-1])} "
                           f"({100 * rise:+.3g}%) while train {name} fell {100 * tdrop:.3g}% ({fmt_num(t0)} -> {fmt_num(t1)})",
                           cause + "; the best checkpoint is the one before validation turned", fixes, "overfitting")
    h = len(vv) // 2
    v0, v1 = float(np.median(vv[h - 1:h + 1])), float(vv[-1])
    t0, t1 = train_at(vst[h]), train_at(vst[-1])
    tdrop = (t0 - t1) / t0 if t0 else 0.0
    if v0 and abs(v1 - v0) / v0 < th.plateau and tdrop > th.overfit_flat_train_drop:
        return Finding("warning", "Overfitting (validation flat while training improves)",
                       f"val {name} stayed at {fmt_num(v0)} -> {fmt_num(v1)} between steps {int(vst[h])} and {int(vst[-1])} "
                       f"while train {name} fell {100 * tdrop:.3g}% ({fmt_num(t0)} -> {fmt_num(t1)})",
                       cause, fixes, "overfitting")
    return None


def _can_augment(view: RunView) -> bool:
    """``data.augment=true`` is a fix for this run: off now, and the run's data kind has augmentations."""
    from ndvq.data import KIND_OPTIONS

    kind = view.cfg("data.kind", "samples")
    return not view.cfg("data.augment", False) and "augment" in KIND_OPTIONS.get(kind, ())


def rule_gap(view: RunView, th: Thresholds) -> Finding | None:
    name = view.recon_name
    if not view.val.has(name) or len(view.train) < th.min_records or _mismatch(view, th):
        return None
    vst, vv = view.val.get(name)
    k = max(1, min(3, len(vv) // 3))  # the last few validations ...
    v, s0, s1 = float(np.median(vv[-k:])), float(vst[-k]), float(vst[-1])
    tst, tv = view.train.get(name)
    span = max(s1 - s0, 0.05 * (view.last_step - view.first_step), 1.0)
    near = (tst >= s0 - span / 2) & (tst <= s1)  # ... against train records over the same steps
    t = float(np.median(tv[near])) if near.any() else view.recent_median("train", name)
    if not (math.isfinite(v) and math.isfinite(t)) or t <= 0 or v <= th.gap_ratio * t:
        return None
    where = f"at step {int(s1)}" if k == 1 else f"over {_steps(s0, s1)} ({k} validations)"
    fixes = [_bigger_batch(view)]
    if _can_augment(view):
        fixes.append(fmt_kv("data.augment", True))
    if view.backbone == "videogpt":
        fixes.append(fmt_kv("model.videogpt.dropout", 0.1))
        if view.cfg("model.videogpt.norm", "batch") == "batch":  # runs recorded before the key: batch norm
            fixes.append(fmt_kv("model.videogpt.norm", "channel"))
    batch_norm = view.backbone == "videogpt" and view.cfg("model.videogpt.norm", "batch") == "batch"
    return Finding("warning", "Validation loss far above training loss",
                   f"val {name} {fmt_num(v)} is {v / t:.2g}x train {name} {fmt_num(t)} {where}",
                   "the validation data differ from what a batch shows the model (small batches, little variety"
                   + (", batch-norm statistics from small batches)" if batch_norm else ")"), fixes, "val_gap")


def _spike_index(v: np.ndarray, th: Thresholds) -> np.ndarray:
    """Indices ``i`` with ``v[i] > spike_factor * median(v[i-k:i])`` (a positive median; ``k = max(3, n // 20)``)."""
    k = max(3, len(v) // 20)
    if len(v) <= k:
        return np.zeros(0, dtype=int)
    ref = np.median(np.lib.stride_tricks.sliding_window_view(v[:-1], k), axis=1)  # ref[j]: median of v[j:j+k]
    return np.nonzero((ref > 0) & (v[k:] > th.spike_factor * ref))[0] + k


def _train_falls_smoothly(view: RunView, th: Thresholds) -> bool:
    """The train loss ends well below where it started with no spikes or blow-ups (a healthy curve)."""
    st, v = view.train.get("loss")
    if len(v) < th.min_records or not np.isfinite(v).all():
        return False
    sm = _smooth(v)
    spikes = len(_spike_index(v, th))
    return bool(sm[-1] < 0.9 * sm[0] and float(np.max(v)) < th.spike_factor * float(v[0]) and spikes < th.spike_count)


def _padding_fixes(view: RunView) -> list[str]:
    """Window / patch sizes halved (less padding around short items)."""
    kind = view.cfg("data.kind", "")
    if kind in ("audio", "series"):
        return [fmt_kv("data.segment_length", max(int(view.cfg("data.segment_length", 16384)) // 4, 16))]
    ps = view.cfg("data.patch_size")
    return [fmt_kv("data.patch_size", [max(int(p) // 2, 8) for p in ps])] if ps else []


def _mismatch(view: RunView, th: Thresholds) -> bool:
    """Whether :func:`rule_mismatch` fires (computed once per view)."""
    if not hasattr(view, "_mismatch_finding"):
        view._mismatch_finding = _find_mismatch(view, th)
    return view._mismatch_finding is not None


def rule_mismatch(view: RunView, th: Thresholds) -> Finding | None:
    """The validation data are not the training data's kind (see :func:`_find_mismatch`)."""
    return view._mismatch_finding if _mismatch(view, th) else None


def _find_mismatch(view: RunView, th: Thresholds) -> Finding | None:
    """The validation data are not the training data's kind: val recon far above train from the first
    validation on (or a trivial val PSNR) while the train loss falls smoothly."""
    name = view.recon_name
    if not view.val.has(name) or len(view.train) < th.min_records or not _train_falls_smoothly(view, th):
        return None
    vst, vv = view.val.get(name)
    tst, tv = view.train.get(name)
    if not len(vv) or not len(tv):
        return None
    t0 = float(np.median(tv[tst <= vst[0]])) if (tst <= vst[0]).any() else float(tv[0])
    first_ratio = float(vv[0]) / max(t0, 1e-30)
    psnr = view.recent_median("val", "psnr") if view.val.has("psnr") else math.nan
    if first_ratio < MISMATCH_RATIO and not psnr < th.psnr_trivial:
        return None
    obs = f"val {name} {fmt_num(float(vv[0]))} is {first_ratio:.3g}x train {name} at the first validation (step {int(vst[0])})"
    if math.isfinite(psnr):
        obs += f"; recent val PSNR {psnr:.3g} dB while the train loss fell smoothly"
    return Finding("warning", "Train and validation data differ",
                   obs, "the validation files hold other data than the training files (another quantity, unit, "
                   "channel layout or sample rate): the model is fine on what it trains on. The start summary "
                   "and data warnings name the files that lie far outside the train statistics",
                   [fmt_kv("data.split_seed", int(view.cfg("data.split_seed", 0)) + 1)], "mismatch")


def rule_slow(view: RunView, th: Thresholds) -> Finding | None:
    if len(view.train) < th.min_records:
        return None
    name = view.recon_name
    drop, a, b, s0, s1 = view.improvement("train", name)
    if not math.isfinite(drop) or drop <= th.still_improving:
        return None
    lr = float(view.cfg("train.learning_rate", 3e-4))
    ms = view.cfg("train.max_steps")
    fixes = []
    if lr < 1e-3:
        fixes.append(fmt_kv("train.learning_rate", min(1e-3, lr * 3)))
    if ms:
        fixes.append(fmt_kv("train.max_steps", int(ms) * 2))
    if int(view.cfg("train.warmup_steps", 0)) > 0.1 * (ms or 1e9):
        fixes.append(fmt_kv("train.warmup_steps", int(0.05 * ms)))
    return Finding("info", "Slow convergence: still improving at the end",
                   f"train {name} fell {100 * drop:.3g}% within the last window ({fmt_num(a)} -> {fmt_num(b)}, steps {int(s0)}-{int(s1)})",
                   "the learning rate is low for this model or the run is shorter than it needs", fixes, "slow")


def rule_lr_constant(view: RunView, th: Thresholds) -> Finding | None:
    if len(view.train) < th.min_records or not view.train.has("lr") or view.cfg("train.weight_ema") is not None:
        return None  # a run that keeps a weight average delivers the average, not the bouncing last weights
    _, lr = view.train.get("lr", view.warm_end)
    if len(lr) < 2 or lr.min() <= 0 or lr.max() / lr.min() >= th.lr_constant:
        return None
    drop, a, b, s0, s1 = view.improvement("train", view.recon_name)
    if not math.isfinite(drop) or drop >= th.plateau:
        return None
    fixes = [fmt_kv("train.weight_ema", 0.99), fmt_kv("train.lr_schedule", "cosine"), _lower_lr(view)]
    return Finding("info", "Learning rate never decayed",
                   f"lr stayed at {fmt_num(float(lr[-1]))} from step {int(view.warm_end)} to {int(view.last_step)} while the loss "
                   f"flattened ({-100 * drop:+.3g}% over steps {int(s0)}-{int(s1)})",
                   "a constant learning rate keeps the weights bouncing around the minimum, so the last weights are a "
                   "lottery ticket (+-0.1-0.2 dB between runs that differ only in batch order, docs/benchmarks-quality.md); "
                   "a moving average of the weights (the default since 2026-12-03) removes the bounce and keeps the "
                   "constant rate's progress; decaying the rate settles it too, at a cost on a short run",
                   fixes, "lr_constant")


def rule_kl_blurry(view: RunView, th: Thresholds) -> Finding | None:
    if not view.continuous or len(view.train) < th.min_records:
        return None
    name = view.recon_name
    drop, a, b, s0, s1 = view.improvement("train", name)
    if not math.isfinite(drop) or drop >= th.plateau:
        return None
    kw = float(view.cfg("loss.kl_weight", 1e-6))
    recon = view.recent_median("train", name)
    kl = view.recent_median("train", "kl_loss")
    share = kw * kl / recon if math.isfinite(kl) and recon > 0 else 0.0
    psnr = view.recent_median("val", "psnr") if view.val.has("psnr") else math.nan
    pw = float(view.cfg("loss.perceptual_weight", 0.0))
    if share <= th.kl_share_high and not (math.isfinite(psnr) and psnr < th.blurry_psnr):
        return None
    fixes = []
    if share > th.kl_share_high:
        fixes.append(fmt_kv("loss.kl_weight", kw / 10))
    if pw == 0:
        fixes.append(fmt_kv("loss.perceptual_weight", 1.0))
    fixes += _capacity_fixes(view)[:1]
    if share <= th.kl_share_high:
        fixes.append(fmt_kv("loss.kl_weight", kw / 10))
    obs = f"train {name} flat at {fmt_num(b)} ({-100 * drop:+.3g}% over steps {int(s0)}-{int(s1)})"
    if math.isfinite(psnr):
        obs += f", val PSNR {psnr:.3g} dB"
    obs += f"; kl_weight*kl_loss = {fmt_num(kw * kl) if math.isfinite(kl) else 'n/a'} ({share:.2g}x recon)"
    cause = ("the KL term dominates and squeezes detail out of the latent (KL weight too high)" if share > th.kl_share_high
             else "pixel losses alone average over detail (perceptual weight too low)" if pw == 0
             else "the model is too small for the detail in the data")
    return Finding("warning", "Blurry reconstructions (KL-VAE)", obs, cause, fixes, "kl_blurry")


def rule_kl_unstructured(view: RunView, th: Thresholds) -> Finding | None:
    if not view.continuous or not view.train.has("kl_loss") or len(view.train) < th.min_records:
        return None
    st, kl = view.train.get("kl_loss", view.warm_end)
    if len(kl) < 2 or kl.min() <= 0:
        return None
    kw = float(view.cfg("loss.kl_weight", 1e-6))
    recon = view.recent_median("train", view.recon_name)
    now = float(np.median(kl[-max(1, len(kl) // 5):]))
    grow = now / float(kl.min())
    share = kw * now / recon if recon > 0 else math.inf
    if grow < th.kl_growth or share >= th.kl_share_low:
        return None
    std = ""
    if view.train.has("latent_std"):
        _, ls = view.train.get("latent_std")
        std = f"; std of the latent means went from {fmt_num(float(ls[0]))} to {fmt_num(view.recent_median('train', 'latent_std'))}"
    return Finding("warning", "Unstructured latent space (KL-VAE)",
                   f"kl_loss grew {grow:.3g}x from {fmt_num(float(kl.min()))} to {fmt_num(now)} (steps {int(st[0])}-{int(st[-1])}); "
                   f"kl_weight*kl is only {share:.2g}x the recon loss{std}",
                   "the KL weight is too low to keep the latent close to N(0, 1): latents spread out and lose "
                   "structure, which hurts a diffusion model trained on them", [fmt_kv("loss.kl_weight", kw * 10), fmt_kv("loss.kl_weight", kw * 100)],
                   "kl_unstructured")


RULES: list[Callable[[RunView, Thresholds], Finding | None]] = [
    rule_out_of_memory,
    rule_nonfinite,
    rule_divergence,
    rule_collapse,
    rule_dead_codes,
    rule_commitment,
    rule_perplexity,
    rule_kl_blurry,
    rule_recon_flat,
    rule_overfitting,
    rule_mismatch,
    rule_gap,
    rule_kl_unstructured,
    rule_slow,
    rule_lr_constant,
]
"""All rules in priority order (ties within a severity keep this order)."""


def consistent_fixes(findings: list[Finding]) -> list[Finding]:
    """Drop a fix that sets a key an earlier (more important) finding already sets to another value, so
    one report never suggests e.g. ``model.n_codes=256`` and ``model.n_codes=2048``."""
    first: dict[str, str] = {}
    for f in findings:
        kept = []
        for fix in f.fixes:
            key, _, value = fix.partition("=")
            if first.setdefault(key, value) == value:
                kept.append(fix)
        f.fixes = kept
    return findings
