"""Code usage over the validation split, for the report's histogram.

How the histogram is obtained (in this order):

1. **Encode the validation split** with the run's best checkpoint (the newest ``checkpoints/best-*.ckpt``;
   else ``checkpoints/last.ckpt``, :func:`ndvq.run.rundir.find_checkpoint`): the model comes from
   :func:`ndvq.run.checkpoint.load_model`, the val split from the checkpoint's config through
   :func:`ndvq.build.build_dataset` (up to ``max_items`` items), and every code index is counted
   against the model's own ``codebook_sizes`` (code positions wholly inside an item's padding, per
   its ``valid`` extent, are not counted).
   The result is cached as ``<run>/code_usage.json`` with the checkpoint's name and mtime, so a
   second report is instant and a newer checkpoint is re-encoded.
2. **A cached/logged** ``code_usage.json`` when the checkpoint cannot be used (no model code,
   data no longer on disk, ``encode=False``).
3. **Nothing**: the report says why and shows the logged perplexity/usage instead.

``code_usage.json``::

    {"kind": "codes", "checkpoint": "best-step0001000.ckpt", "mtime": 1700000000.0, "step": 1000,
     "split": "val", "items": 64, "n_codes": [512],            # one entry per level
     "counts": [[[...K ints...]]]}                              # [level][codebook G][K]

For a model without codes (a Gaussian bottleneck, ``codebook_sizes == ()``), ``"kind": "latent"`` with a histogram of the posterior means (``edges``,
``hist``), their ``mean``/``std`` and the ``scale_factor = 1 / std`` a diffusion model would use.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from ndvq.errors import CheckpointError
from ndvq.run.rundir import find_checkpoint, metrics_path, read_metrics

__all__ = ["code_usage", "usage_summary"]

_BEST = re.compile(r"best-step(\d+)")


def _read_cache(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("kind") in ("codes", "latent") else None


def _best_checkpoint(run: Path) -> Path | None:
    try:
        return find_checkpoint(run, best=True)
    except CheckpointError:
        return None


def code_usage(run_dir: str | Path, max_items: int = 256, batch_size: int = 16, encode: bool = True) -> tuple[dict | None, str]:
    """Per-code counts over the val split (see the module docstring).

    Args:
        run_dir: the run folder.
        max_items: validation items to encode at most. Default 256.
        batch_size: items per forward pass. Default 16.
        encode: allow loading the checkpoint and encoding (False: cache only). Default True.

    Returns:
        ``(data, note)``: the ``code_usage.json`` dict (or None) and a sentence saying where it came from.
    """
    run = Path(run_dir)
    cache_path = run / "code_usage.json"
    cache = _read_cache(cache_path) if cache_path.is_file() else None
    ckpt = _best_checkpoint(run)
    if ckpt is not None and cache and cache.get("checkpoint") == ckpt.name and cache.get("mtime") == ckpt.stat().st_mtime:
        return cache, f"encoded {cache.get('items')} val items with {ckpt.name} (cached)"
    if ckpt is not None and encode:
        try:
            data = _encode_val(run, ckpt, max_items, batch_size)
        except Exception as e:  # the report must still render: it shows why (a bug included), and the cache
            why = f"could not encode the val split with {ckpt.name} ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
            if cache:
                return cache, why + f"; showing the saved histogram of {cache.get('checkpoint', '?')}"
            return None, why
        try:
            cache_path.write_text(json.dumps(data))
        except OSError:
            pass
        return data, f"encoded {data['items']} val items with {ckpt.name} (step {data['step']})"
    if cache:
        return cache, f"saved histogram from {cache.get('checkpoint', '?')} (step {cache.get('step', '?')})"
    return None, "no checkpoint in the run folder yet, so the val split could not be encoded"


def _checkpoint_step(run: Path, ckpt: Path) -> int:
    """The step of a ``best-stepN.ckpt`` from its name; of ``last.ckpt``, the last logged step."""
    m = _BEST.search(ckpt.name)
    if m:
        return int(m.group(1))
    steps = [r["step"] for r in read_metrics(metrics_path(run)) if isinstance(r.get("step"), (int, float))]
    return int(max(steps, default=0))


def _encode_val(run: Path, ckpt: Path, max_items: int, batch_size: int) -> dict:
    import torch

    from ndvq.build import build_dataset
    from ndvq.run.checkpoint import load_model

    loaded = load_model(ckpt)
    model = loaded.model
    ds = build_dataset(loaded.config, "val", stats_dir=run)
    n = min(len(ds), max_items)
    sizes = [int(k) for k in model.codebook_sizes]
    levels: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            items = [ds[i] for i in range(start, min(n, start + batch_size))]
            x = torch.stack([it["data"] for it in items])
            out = _levels(model.encode(x), bool(sizes))
            levels = levels or [[] for _ in out]
            for acc, t in zip(levels, out):
                acc.append(_real_positions(t.cpu(), x.shape, items, model.n_dims) if sizes else t.cpu())
    base = {"checkpoint": ckpt.name, "mtime": ckpt.stat().st_mtime, "step": _checkpoint_step(run, ckpt),
            "split": "val", "items": n}
    if not sizes:
        return {"kind": "latent", **base, **_latent_histogram(levels[0])}
    return {"kind": "codes", **base, **_code_counts(levels, sizes, model.n_dims)}


def _real_positions(codes, x_shape, items: list[dict], n_dims: int):
    """``codes [B, *L(, G)]`` -> ``[N, G]``: the code positions not wholly inside padding (items' ``valid``)."""
    import torch

    from ndvq.data.common import code_mask

    g = codes.shape[-1] if codes.ndim == n_dims + 2 else 1
    if any("valid" not in it for it in items):
        return codes.reshape(-1, g)
    lat = codes.shape[1:1 + n_dims]
    valid = torch.stack([it["valid"] for it in items])
    mask = code_mask(valid, [int(s) // int(n) for s, n in zip(x_shape[2:], lat)], lat)  # [B, *L]
    return codes.reshape(*codes.shape[:1 + n_dims], g)[mask]


def _levels(encoded, discrete: bool) -> list:
    """``model.encode`` output as a list of tensors: codes per level (hierarchical: top, bottom), or the
    latent means of a Gaussian bottleneck."""
    if not discrete:
        return [encoded.mean if hasattr(encoded, "mean") and not callable(encoded.mean) else encoded]
    if hasattr(encoded, "top") and hasattr(encoded, "bottom"):
        return [encoded.top, encoded.bottom]
    return [encoded]


def _latent_histogram(means: list) -> dict:
    import torch

    values = torch.cat([t.flatten() for t in means]).double().numpy()
    std = float(values.std())
    hist, edges = np.histogram(values, bins=60)
    return {"mean": float(values.mean()), "std": std, "scale_factor": 1.0 / std if std > 0 else math.inf,
            "hist": hist.tolist(), "edges": edges.tolist()}


def _code_counts(levels: list, sizes: list[int], n_dims: int) -> dict:
    """``{"n_codes": [K per level], "counts": [level][G][K]}``; the level's index columns take their
    codebook sizes from ``sizes`` in order (the model's ``codebook_sizes``)."""
    import torch

    n_codes, counts, col = [], [], 0
    for acc in levels:
        g = acc[0].shape[-1]  # [N, G]: the real code positions (_real_positions)
        k = max(sizes[min(col + j, len(sizes) - 1)] for j in range(g))
        col += g
        idx = torch.cat([t.reshape(-1, g) for t in acc])  # [B, *L(, G)] -> [N, G]
        counts.append([torch.bincount(idx[:, j].clamp_min(0), minlength=k).tolist() for j in range(g)])
        n_codes.append(max(k, len(counts[-1][0])))  # never hide an index beyond the expected K
    return {"n_codes": n_codes, "counts": counts}


def usage_summary(data: dict) -> str:
    """One line: used codes, perplexity of the val histogram per level."""
    if data.get("kind") == "latent":
        return (f"latent means: mean {data['mean']:.3g}, std {data['std']:.3g}, "
                f"suggested scale_factor = 1/std = {data['scale_factor']:.3g}")
    parts = []
    for lv, (lc, k) in enumerate(zip(data["counts"], data["n_codes"])):
        c = np.asarray(lc, dtype=float).sum(0)
        p = c / max(c.sum(), 1)
        perp = float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
        name = f"level {lv}: " if len(data["counts"]) > 1 else ""
        parts.append(f"{name}{int((c > 0).sum())} of {k} codes used ({100 * (c > 0).mean():.3g}%), perplexity {perp:.3g}")
    return "; ".join(parts)
