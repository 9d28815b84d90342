"""Dead-code churn: how many codes the default quantizer re-seeds per step, next to the previous rule.

The codebook benchmark's setting (``benchmarks/codebook.py``: the same model, real 32x32 patches
of the built-in sample photographs, batch 32 = 2048 tokens per step, Adam 1e-3) at K=8192 codes,
where a step has four times fewer tokens than codes. Each configuration trains for ``--steps``
steps; every call of the quantizer's re-seeding step is wrapped to count the codes it changed.
Reported: re-seeded codes per step after ``--skip`` steps (the k-means init and first restarts
settle), and in all. An absolute dead-code threshold of 1 re-seeds codes that are in use when the
average code's count per step is 0.25; the default's relative rule re-seeds codes used less
than half as often as the average one.

One command (from the repository root)::

    .venv/bin/python -m benchmarks.churn                  # K=8192, 1000 steps, seed 0 (~2 min)
"""

from __future__ import annotations

import argparse
import json

import torch
from benchmarks.codebook import MODEL, _stack, train_model
from benchmarks.common import set_threads

from ndvq.data import create_dataset
from ndvq.models import VQVAE

CONFIGS = {
    "previous rule (absolute threshold 1.0, uniform candidates)": dict(kind="vq", restart_threshold=1.0,
                                                                       restart_sampling="uniform"),
    "default (relative threshold 0.5, error-weighted candidates)": dict(kind="vq"),
}


def count_reseeds(quantizer: dict, train: torch.Tensor, n_codes: int, steps: int, seed: int) -> list[int]:
    """Train the benchmark model; return the number of codes re-seeded at each step."""
    torch.manual_seed(seed)
    model = VQVAE(**MODEL, n_codes=n_codes, quantizer=dict(quantizer))
    model.validate_inputs = False
    vq = model.quantizer
    counts: list[int] = []
    restart = vq._restart

    def counted() -> None:
        before = vq.embed.detach().clone()
        restart()
        counts.append(int((vq.embed.detach() != before).any(dim=1).sum()))

    vq._restart = counted
    train_model(model, train, steps, 32, 1e-3, seed)
    return counts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", type=int, default=8192)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--skip", type=int, default=200, help="steps left out of the per-step mean (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    set_threads(args.threads)
    train = _stack(create_dataset("samples", "train", patch_size=[32, 32], sample_patches=16384))
    results = {}
    for name, quantizer in CONFIGS.items():
        counts = count_reseeds(quantizer, train, args.codes, args.steps, args.seed)
        late = counts[args.skip:]
        results[name] = {"reseeds_per_step": sum(late) / max(1, len(late)), "reseeds_total": sum(counts),
                         "times_each_code": sum(counts) / args.codes}
        print(f"{name}: {results[name]['reseeds_per_step']:.1f} codes re-seeded per step after step {args.skip}, "
              f"{sum(counts)} in {args.steps} steps ({results[name]['times_each_code']:.1f} per code)", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
