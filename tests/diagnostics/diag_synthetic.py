"""Synthetic metrics logs, one per pathology, and run folders built from them.

Each scenario is a pair ``(records, config)`` in the formats of docs/design.md: records as
``metrics.jsonl`` lines and the resolved config as a nested dict (``Config().model_dump``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from ndvq.config import Config

STEPS = 2000
LOG = 10
VAL = 100


def base_config(**sections) -> dict:
    """The resolved config (``Config`` dumped to a dict) of a config file holding only ``sections``
    (``{"model": {"kind": "klvae", "ldm.channels": [8, 16]}}``; dotted keys nest), validated."""
    cfg: dict = {}
    for sec, vals in sections.items():
        for k, v in vals.items():
            node = cfg.setdefault(sec, {})
            *path, last = k.split(".")
            for p in path:
                node = node.setdefault(p, {})
            node[last] = v
    return Config.model_validate(cfg).model_dump(mode="json")


def _curve(t, start=1.0, end=0.05, rate=6.0):
    return end + (start - end) * np.exp(-rate * t)


def scenario(name: str, seed: int = 0) -> tuple[list[dict], dict]:
    """Records and config showing pathology ``name`` (see SCENARIOS)."""
    rng = np.random.default_rng(seed)
    cfg_over: dict = {"train": {"lr_schedule": "cosine", "max_steps": STEPS}}
    kl = name.startswith("kl_") or name == "oom"
    if kl:
        cfg_over["model"] = {"kind": "klvae"}
        cfg_over["loss"] = {"kl_weight": 1e-6, "perceptual_weight": 1.0}
    n_codes = 512
    steps = np.arange(0, STEPS + 1, LOG)
    t = steps / STEPS
    recon = _curve(t) * (1 + 0.02 * rng.standard_normal(len(t)))
    perp = 40 + 160 * (1 - np.exp(-8 * t))
    commit = 0.2 * recon
    lr = 3e-4 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t)))
    dead = np.full(len(t), 20.0)
    nonfinite = np.zeros(len(t))
    val_factor = np.full(len(t), 1.05)
    psnr_base = 28.0
    kl_loss = 2000.0 * (1 + t)
    if name == "collapse":
        perp = 40 * np.exp(-10 * t) + 2.0
        dead = np.minimum(510, 20 + 600 * t)
        cfg_over["model"] = {"quantizer.codebook_dim": None, "quantizer.cosine": False}  # the classic lookup
    elif name == "overfitting":
        val_factor = 1.0 + np.clip(t - 0.4, 0, None) * 4.0
    elif name == "high_commitment":
        commit = recon * (0.5 + 10 * t)
    elif name == "low_commitment":
        commit = recon * 1e-4
    elif name == "instability":
        recon = _curve(np.minimum(t, 0.3)) * (1 + 0.02 * rng.standard_normal(len(t)))
        recon = recon * np.where(t > 0.5, 1 + 4 * (t - 0.5), 1.0)
        recon[len(t) // 2 + 7::17] *= 8
    elif name == "nonfinite":
        nonfinite = np.floor(np.clip(t - 0.5, 0, None) * 200)
    elif name == "lr_constant":
        lr = np.full(len(t), 3e-4)
        recon = _curve(t, rate=12) * (1 + 0.02 * rng.standard_normal(len(t)))
        cfg_over["train"].update(lr_schedule="constant", weight_ema=None)  # the last weights, not an average
    elif name == "low_perplexity":
        perp = 10 + 20 * (1 - np.exp(-8 * t))
    elif name == "high_perplexity":
        perp = 200 + 290 * (1 - np.exp(-8 * t))
    elif name == "dead_codes":
        dead = 20 + 300 * t
    elif name == "val_gap":
        val_factor = np.full(len(t), 2.5)
    elif name == "slow":
        recon = _curve(t, rate=0.7)
    elif name == "recon_flat":
        recon = _curve(t, end=0.7, rate=30) * (1 + 0.01 * rng.standard_normal(len(t)))
        psnr_base = 14.0
    elif name == "kl_blurry":
        recon = _curve(t, rate=30) * (1 + 0.01 * rng.standard_normal(len(t)))
        cfg_over["loss"] = {"kl_weight": 1e-3, "perceptual_weight": 0.0}
        kl_loss = np.full(len(t), 50.0)
        psnr_base = 21.0
    elif name == "kl_unstructured":
        cfg_over["loss"] = {"kl_weight": 1e-10, "perceptual_weight": 1.0}
        kl_loss = 100.0 * np.exp(5 * t)
    elif name not in ("healthy", "oom"):
        raise ValueError(f"unknown scenario {name!r}")
    records = []
    for i, s in enumerate(steps):
        r = {"step": int(s), "epoch": int(s // 500), "split": "train", "time": float(s) * 0.1,
             "loss": float(recon[i] + 0.25 * commit[i]), "recon_loss": float(recon[i]),
             "lr": float(lr[i]), "samples_per_sec": 500.0, "nonfinite_steps": int(nonfinite[i]), "skipped_files": 0}
        if kl:
            kli = float(kl_loss[i] if np.ndim(kl_loss) else kl_loss)
            r.update(kl_loss=kli, perceptual_loss=float(0.3 * recon[i]), latent_std=float(np.sqrt(kli / 100)))
            r["loss"] = float(recon[i] + cfg_over["loss"]["kl_weight"] * r["kl_loss"])
        else:
            r.update(commitment_loss=float(commit[i]), perplexity=float(perp[i] * (1 + 0.02 * rng.standard_normal())),
                     usage=float(min(1.0, perp[i] * 1.5 / n_codes)), window_usage=float(min(1.0, perp[i] * 2 / n_codes)),
                     dead_codes=float(dead[i]))
        if name == "nonfinite" and s == 1500:
            r["loss"] = float("nan")
        records.append(r)
        if s % VAL == 0 and s > 0:
            vr = recon[i] * val_factor[i]
            v = {"step": int(s), "epoch": int(s // 500), "split": "val", "time": float(s) * 0.1,
                 "loss": float(vr), "recon_loss": float(vr), "psnr": float(psnr_base - 10 * np.log10(max(recon[i], 1e-6) / recon[-1]))}
            if not kl:
                v.update(commitment_loss=float(commit[i]), perplexity=float(perp[i]), usage=float(min(1.0, perp[i] * 1.5 / n_codes)))
            records.append(v)
    if name == "oom":
        records = records[:30]
        records.append({"split": "error", "error": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"})
    return records, base_config(**cfg_over)


SCENARIOS = {
    # scenario -> rule id of the expected top finding
    "healthy": "healthy",
    "collapse": "collapse",
    "overfitting": "overfitting",
    "high_commitment": "commitment_high",
    "low_commitment": "commitment_low",
    "instability": "instability",
    "nonfinite": "nonfinite",
    "lr_constant": "lr_constant",
    "low_perplexity": "low_perplexity",
    "high_perplexity": "high_perplexity",
    "dead_codes": "dead_codes",
    "val_gap": "val_gap",
    "slow": "slow",
    "recon_flat": "recon_flat",
    "kl_blurry": "kl_blurry",
    "kl_unstructured": "kl_unstructured",
    "oom": "out_of_memory",
}


def write_run(root: Path, name: str, records: list[dict], config: dict, truncate_last: bool = False) -> Path:
    """A run folder ``root/name`` with ``config.yaml`` and ``metrics.jsonl`` (last line cut in half if asked)."""
    run = Path(root) / name
    run.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    config["run"] = dict(config.get("run", {}), name=name, root=str(root))
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    lines = [json.dumps(r) for r in records if r.get("split") != "error"]
    text = "\n".join(lines) + "\n"
    if truncate_last:
        text = text[: -len(lines[-1]) // 2]
    (run / "metrics.jsonl").write_text(text)
    errors = [r["error"] for r in records if r.get("split") == "error"]
    if errors:
        (run / "train.log").write_text("Traceback (most recent call last):\n" + "\n".join(errors) + "\n")
    return run


def add_samples(run: Path, modality: str = "image", step: int = 2000) -> Path:
    """Sample files like ``ndvq.data.write_samples`` writes them (PNG grid, GIF, WAV + PNG, mid-slice PNG)."""
    from PIL import Image

    out = run / "samples" / f"step{step:07d}"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    img = (rng.random((64, 128, 3)) * 255).astype(np.uint8)
    if modality in ("image", "volume", "series"):
        Image.fromarray(img).save(out / ("mid_slices.png" if modality == "volume" else "recon_grid.png"))
    if modality == "video":
        frames = [Image.fromarray(np.roll(img, 4 * k, axis=1)) for k in range(6)]
        frames[0].save(out / "recon.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    if modality == "audio":
        import soundfile as sf

        tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000).astype(np.float32)
        sf.write(out / "input_0.wav", tone, 8000)
        sf.write(out / "recon_0.wav", tone * 0.9, 8000)
        Image.fromarray(img).save(out / "waveforms.png")
    if modality == "volume":
        (out / "recon_0.nii.gz").write_bytes(b"\x00" * 64)
    return out


def add_code_usage(run: Path, n_codes: int = 512, used: int = 200, step: int = 2000) -> None:
    """A ``code_usage.json`` as the report caches it (Zipf-like counts over ``used`` codes)."""
    counts = np.zeros(n_codes, dtype=int)
    counts[:used] = (1000 / np.arange(1, used + 1)).astype(int) + 1
    np.random.default_rng(0).shuffle(counts)
    (run / "code_usage.json").write_text(json.dumps({
        "kind": "codes", "checkpoint": "best-step0002000.ckpt", "mtime": 0.0, "step": step, "split": "val",
        "items": 64, "n_codes": [n_codes], "counts": [[counts.tolist()]]}))
