"""Code usage over the validation split, for the report's histogram.

How the histogram is obtained (in this order):

1. **Encode the validation split** with the run's best checkpoint (``checkpoints/best-*.ckpt``,
   the lowest validation loss; else ``checkpoints/last.ckpt``): the model is rebuilt from the
   checkpoint's ``model_class`` + ``model_args``, the val split from the run's ``config.yaml``
   through ``ndvq.builders`` (up to ``max_items`` items), and every code index is counted.
   The result is cached as ``<run>/code_usage.json`` with the checkpoint's name and mtime, so a
   second report is instant and a newer checkpoint is re-encoded.
2. **A cached/logged** ``code_usage.json`` when the checkpoint cannot be used (no model code,
   data no longer on disk, ``encode=False``).
3. **Nothing**: the report says why and shows the logged perplexity/usage instead.

``code_usage.json``::

    {"kind": "codes", "checkpoint": "best-step0001000.ckpt", "mtime": 1700000000.0, "step": 1000,
     "split": "val", "items": 64, "n_codes": [512],            # one entry per level
     "counts": [[[...K ints...]]]}                              # [level][codebook G][K]

For a KL-VAE, ``"kind": "latent"`` with a histogram of the posterior means (``edges``,
``hist``), their ``mean``/``std`` and the ``scale_factor = 1 / std`` a diffusion model would use.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

__all__ = ["find_best_checkpoint", "code_usage", "usage_summary"]

_BEST = re.compile(r"best-step(\d+)")


def find_best_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest ``best-step*.ckpt`` (the loop keeps the best N), else ``last.ckpt``, else None."""
    ck = Path(run_dir) / "checkpoints"
    best = sorted(ck.glob("best-*.ckpt"), key=lambda p: int(m.group(1)) if (m := _BEST.search(p.name)) else -1)
    if best:
        return best[-1]
    last = ck / "last.ckpt"
    return last if last.is_file() else None


def _read_cache(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("kind") in ("codes", "latent") else None


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
    ckpt = find_best_checkpoint(run)
    if ckpt is not None and cache and cache.get("checkpoint") == ckpt.name and cache.get("mtime") == ckpt.stat().st_mtime:
        return cache, f"encoded {cache.get('items')} val items with {ckpt.name} (cached)"
    if ckpt is not None and encode:
        try:
            data = _encode_val(run, ckpt, max_items, batch_size)
        except Exception as e:  # the report must still render: say why, fall back to the cache
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


def _encode_val(run: Path, ckpt: Path, max_items: int, batch_size: int) -> dict:
    import torch

    from ndvq.builders import build_dataset, encode_batch, model_from_args
    from ndvq.config import validate_config
    from ndvq.diagnostics.doctor import read_config
    from ndvq.train.checkpoint import load_checkpoint

    state = load_checkpoint(ckpt)
    cfg = validate_config(state.get("config") or read_config(run))
    model = model_from_args(state["model_class"], state["model_args"])
    model.load_state_dict(state["model"])
    model.eval()
    ds = build_dataset(cfg, "val", stats_dir=run)
    n = min(len(ds), max_items)
    kind = cfg.model.kind
    levels: list[list[torch.Tensor]] = []
    for start in range(0, n, batch_size):
        x = torch.stack([ds[i]["data"] for i in range(start, min(n, start + batch_size))])
        out = encode_batch(model, kind, x)
        if not levels:
            levels = [[] for _ in out]
        for acc, t in zip(levels, out):
            acc.append(t.cpu())
    base = {"checkpoint": ckpt.name, "mtime": ckpt.stat().st_mtime, "step": int(state.get("step", 0)),
            "split": "val", "items": n}
    if kind == "klvae":
        means = torch.cat([t.flatten() for t in levels[0]]).double().numpy()
        std = float(means.std())
        hist, edges = np.histogram(means, bins=60)
        return {"kind": "latent", **base, "mean": float(means.mean()), "std": std,
                "scale_factor": 1.0 / std if std > 0 else math.inf, "hist": hist.tolist(), "edges": edges.tolist()}
    margs = state["model_args"]
    n_codes = _codes_per_level(margs, len(levels))
    counts = []
    for lv, (acc, k) in enumerate(zip(levels, n_codes)):
        g = acc[0].shape[-1] if _grouped(margs) else 1
        idx = torch.cat([t.reshape(-1, g) for t in acc])  # [B, *latent(, G)] -> [N, G]
        counts.append([torch.bincount(idx[:, j].clamp_min(0), minlength=k).tolist() for j in range(g)])
        n_codes[lv] = max(k, len(counts[-1][0]))  # never hide an index beyond the expected K
    return {"kind": "codes", **base, "n_codes": n_codes, "counts": counts}


def _grouped(model_args: dict) -> bool:
    return (model_args.get("quantizer") or {}).get("kind") in ("residual", "grouped")


def _codes_per_level(model_args: dict, n_levels: int) -> list[int]:
    q = model_args.get("quantizer") or {}
    k = int(model_args.get("n_codes", 512))
    if q.get("kind") == "fsq":
        k = int(np.prod(q.get("levels", [8, 5, 5, 5])))
    elif q.get("kind") == "lfq":
        k = 2 ** len(q.get("levels", [8, 5, 5, 5]))
    if n_levels == 2:
        return [int(model_args.get("top_n_codes") or k), k]
    return [k] * n_levels


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
