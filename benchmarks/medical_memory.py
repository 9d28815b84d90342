"""Peak memory and step time of the default medical config, with and without activation checkpointing.

The default medical ``vae_config.json`` (2D, 256x256 patches, batch 8, channels [64, 128, 256],
L1 + KL + perceptual loss) as ndvq builds it, trained for a few steps on random data on the CPU.
Each variant runs in its own subprocess, so its peak resident set size (``ru_maxrss``) is its own.
The perceptual loss needs a VGG16 trunk; without one on this machine a randomly initialised
VGG16-layout file of the same size is written to a temporary folder (same compute and memory).

Usage:
    python benchmarks/medical_memory.py [--steps 3] [--threads 2] [--size 256] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _vgg_file(folder: Path) -> Path:
    """A VGG16-layout state dict with random weights (torchvision key names)."""
    import torch

    from ndvq.objectives.perceptual import LAYOUTS, FeatureNet

    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert len([x for x in LAYOUTS["vgg16"]["layers"] if x[0] == "conv"]) == len(widths)
    net = FeatureNet("vgg16", widths)
    path = folder / "vgg16-random.pth"
    torch.save({f"features.{k}": v for k, v in net.features.state_dict().items()}, path)
    return path


def run_variant(checkpointing: bool, steps: int, threads: int, size: int, batch: int, vgg: str) -> dict:
    """Train ``steps`` steps in this process; returns step times and the peak RSS."""
    import torch

    from ndvq.build import build_model, build_objective
    from ndvq.config.medical import from_medical

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg, _ = from_medical({"data_base_dir": "/nonexistent", "autoencoder_def": {},
                           "autoencoder_train": {"batch_size": batch, "patch_size": [size, size]}}, check_paths=False)
    cfg.loss.perceptual_weights = Path(vgg)
    model, objective = build_model(cfg), build_objective(cfg)
    model.set_activation_checkpointing(checkpointing)
    objective.set_activation_checkpointing(checkpointing)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.learning_rate)
    x = torch.rand(batch, cfg.model.in_channels, size, size) * 2 - 1
    times, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        res = objective(x, model(x), 0)
        res.loss.backward()
        opt.step()
        times.append(round(time.perf_counter() - t0, 1))
        cpu.append(round(time.process_time() - c0, 1))  # CPU seconds of all threads: robust to a busy machine
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"activation_checkpointing": checkpointing, "step_s": times, "step_cpu_s": cpu,
            "peak_rss_mb": round(peak_mb)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    ap.add_argument("--vgg", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(run_variant(a.child == "on", a.steps, a.threads, a.size, a.batch, a.vgg)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        vgg = str(_vgg_file(Path(tmp)))
        rows = []
        for flag in ("off", "on"):
            cmd = [sys.executable, __file__, "--child", flag, "--vgg", vgg, "--steps", str(a.steps),
                   "--threads", str(a.threads), "--size", str(a.size), "--batch", str(a.batch)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    base, ckpt = rows

    def mean(r: dict, key: str) -> float:
        v = r[key][1:] or r[key]  # after the first (warm-up) step
        return sum(v) / len(v)

    t0, t1, c0, c1 = mean(base, "step_s"), mean(ckpt, "step_s"), mean(base, "step_cpu_s"), mean(ckpt, "step_cpu_s")
    print(f"| activation_checkpointing | peak RSS (MB) | step wall time (s) | step CPU time (s) |\n|---|---|---|---|\n"
          f"| false | {base['peak_rss_mb']} | {t0:.1f} | {c0:.1f} |\n| true | {ckpt['peak_rss_mb']} | {t1:.1f} | {c1:.1f} |\n"
          f"RSS ratio {ckpt['peak_rss_mb'] / base['peak_rss_mb']:.2f}, wall-time ratio {t1 / t0:.2f}, "
          f"CPU-time ratio {c1 / c0:.2f} (steps after the first)")


if __name__ == "__main__":
    main()
