"""Encode throughput (latent vectors tokenized per second) and peak memory of the ``ndvq encode`` path.

Each measurement runs in a fresh process (``python -m benchmarks.encode --worker ...``) so its peak
resident memory (``VmHWM``, see ``benchmarks/common.py``) is its own. The worker builds an
``ndvq.VQVAE`` (2D, 32x32 RGB inputs, downsample 4: 64 latent vectors per image, 64-dim codes searched in all
64 dimensions (``codebook_dim=None, cosine=False``; the default 8-dim lookup would be 8x cheaper)),
then encodes batches of real image patches exactly as ``ndvq encode`` does: ``builders.encode_batch``
(``model.encode``) under ``torch.no_grad`` in eval mode, codes moved to NumPy and kept, until
``--vectors`` latent vectors are done. The codebook is not trained (encode cost does not depend on
the code values). Reported: vectors/s over the encode calls, wall seconds, peak RSS and the RSS
before encoding started (Python + torch + model).

Run alone: ``python -m benchmarks.encode [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from benchmarks.common import markdown_table, peak_rss_mb, real_batch, run_isolated, set_threads

__all__ = ["measure", "worker"]

IMAGE, DOWNSAMPLE = 32, 4
VECTORS_PER_IMAGE = (IMAGE // DOWNSAMPLE) ** 2


def worker(vectors: int, codes: int, batch: int, threads: int, n_hiddens: int = 64) -> dict:
    """Encode ``vectors`` latent vectors against ``codes`` codes in this process; return the figures."""
    set_threads(threads)
    from ndvq import VQVAE, builders

    torch.manual_seed(0)
    model = VQVAE(n_dims=2, in_channels=3, n_hiddens=n_hiddens, n_res_layers=2,
                  downsample=(DOWNSAMPLE, DOWNSAMPLE), embedding_dim=64, n_codes=codes,
                  n_head=2, attn_type="full", norm="batch",  # the layers of the stored results
                  quantizer={"codebook_dim": None, "cosine": False}).eval()  # Euclidean in all 64 dims: the heavy case
    pool = [real_batch(2, batch, IMAGE, seed=i) for i in range(8)]  # [batch, 3, 32, 32] each
    base = peak_rss_mb()
    n_images = -(-vectors // VECTORS_PER_IMAGE)
    kept = []
    spent, done, i = 0.0, 0, 0
    t_wall = time.perf_counter()
    with torch.no_grad():
        while done < n_images:
            x = pool[i % len(pool)][: n_images - done]
            i += 1
            t0 = time.perf_counter()
            levels = builders.encode_batch(model, "vqvae", x)
            kept.append(levels[0].cpu().numpy())  # [b, 8, 8] int64, as ndvq encode keeps them
            spent += time.perf_counter() - t0
            done += x.shape[0]
    wall = time.perf_counter() - t_wall
    n_vec = sum(a.size for a in kept)
    return {"vectors": n_vec, "codes": codes, "batch": batch, "encode_s": spent, "wall_s": wall,
            "vectors_per_s": n_vec / spent, "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base}


def measure(vectors: int, codes: int, batch: int = 64, threads: int = 2) -> dict:
    """Run :func:`worker` in a fresh process and return its figures."""
    return run_isolated("benchmarks.encode", ["--worker", "--vectors", vectors, "--codes", codes,
                                              "--batch", batch, "--threads", threads])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--vectors", type=int, default=1_000_000)
    p.add_argument("--codes", type=int, default=65536)
    p.add_argument("--batch", type=int, default=64, help="images per encode call (64 latent vectors each)")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.vectors, args.codes, args.batch, args.threads)), flush=True)
        return
    grid = [(8192, 1024), (8192, 4096)] if args.quick else [(args.vectors, args.codes)]
    rows = []
    for n, k in grid:
        r = measure(n, k, args.batch, args.threads)
        rows.append([r["vectors"], r["codes"], r["vectors_per_s"], r["wall_s"], r["peak_rss_mb"], r["base_rss_mb"]])
    print(markdown_table(["vectors", "codes", "vectors/s", "wall s", "peak RSS MB", "RSS before encoding MB"], rows))


if __name__ == "__main__":
    main()
