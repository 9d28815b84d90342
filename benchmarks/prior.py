"""The code prior on the default run: NLL in bits per code vs fixed-length codes, and sampling speed.

1. The default run (``ndvq train`` with no arguments: 8x8 codes of 128 entries per 32x32 patch) is
   trained under ``nice -n 10`` into ``--run`` if it has no checkpoint there.
2. Its prior is trained with ``configs/prior.yaml`` (``ndvq prior RUN``, under ``nice``) for each
   ``--seeds`` seed (the last one stays in ``RUN/prior``); the wall time of each is reported.
3. Reported: the validation NLL in bits per code (``metrics.jsonl``, the fixed validation tiles) next to
   the fixed-length ``log2 K`` and the empirical entropy of the codes' histogram on the same tiles
   (what a static per-code model reaches); sampling speed in codes per second with the key/value cache
   and without it (the whole prefix recomputed per token), batch ``--n``, single-threaded, timed in
   interleaved rounds (``benchmarks.common.interleaved_medians``).

One command (from the repository root)::

    PYTHONPATH=src .venv/bin/python -m benchmarks.prior        # trains what is missing, then measures
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from benchmarks.common import ROOT, interleaved_medians, machine_info, markdown_table, set_threads

from ndvq.prior.data import TileSampler, encode_split
from ndvq.prior.sample import sample_tile
from ndvq.prior.store import load_prior, prior_dir
from ndvq.prior.train import load_codes_model
from ndvq.run.rundir import read_metrics


def _ndvq(args: list[str]) -> float:
    """Run ``nice -n 10 python -m ndvq ARGS`` (this checkout's source first); returns its wall seconds."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.time()
    subprocess.run(["nice", "-n", "10", sys.executable, "-m", "ndvq", *args], check=True, env=env)
    return time.time() - t0


def entropy_bits(tiles: torch.Tensor, k: int) -> float:
    """Empirical entropy (bits per code) of the codes' histogram."""
    p = torch.bincount(tiles.reshape(-1).long(), minlength=k).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log2()).sum())


def speed(run: Path, n: int, rounds: int) -> dict[str, float]:
    """Codes per second of sampling one tile for ``n`` items, with and without the key/value cache."""
    prior, facts = load_prior(run)
    from ndvq.prior.layout import layout_for

    tile = layout_for(load_codes_model(run).model, tuple(facts["item_spatial"]), tuple(facts["block"])).tiles[0]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sec = interleaved_medians({"kv cache": lambda: sample_tile(prior, tile, n, gen),
                                   "no cache": lambda: sample_tile(prior, tile, n, gen, cache=False)},
                                  warmup=1, rounds=rounds)
    return {k: n * tile.length / v for k, v in sec.items()}


def val_figures(run: Path) -> dict[str, float]:
    """Fixed-length and histogram-entropy bits per code on the prior's validation tiles."""
    loaded = load_codes_model(run)
    prior, facts = load_prior(run)
    from ndvq import build
    from ndvq.prior.config import validate_prior_config
    from ndvq.prior.layout import layout_for

    cfg = validate_prior_config(facts["prior"])
    val = build.build_dataset(loaded.config, "val", stats_dir=run)
    layout = layout_for(loaded.model, tuple(facts["item_spatial"]), tuple(facts["block"]))
    tiles = TileSampler(encode_split(loaded.model, val, cfg.max_items), layout).fixed(cfg.seed + 1, cfg.val_tiles)
    k = max(facts["codebook_sizes"])
    return {"fixed_bits": sum(math.log2(int(v)) for v in layout.tiles[0].vocab) / layout.tiles[0].length,
            "histogram_entropy_bits": entropy_bits(tiles, k), "tile_codes": layout.tiles[0].length,
            "prior_parameters": prior.n_parameters()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "default", help="the default run (trained if absent)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="prior seeds (default: 0 1)")
    p.add_argument("--n", type=int, default=16, help="items sampled together (default 16, as ndvq sample)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--skip-training", action="store_true", help="measure the prior already in RUN/prior")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "prior.json")
    args = p.parse_args(argv)
    set_threads(1)
    run = args.run
    if not (run / "checkpoints" / "last.ckpt").is_file():
        print(f"training the default run into {run} (nice -n 10) ...", flush=True)
        _ndvq(["train", f"run.root={run.parent}", f"run.name={run.name}"])
    per_seed = []
    for seed in ([] if args.skip_training else args.seeds):
        secs = _ndvq(["prior", str(run), "-c", str(ROOT / "configs" / "prior.yaml"), f"prior.seed={seed}", "--overwrite"])
        val = [r for r in read_metrics(prior_dir(run)) if r.get("split") == "val"]
        per_seed.append({"seed": seed, "val_nll_bits": val[-1]["nll_bits"], "train_seconds": round(secs, 1)})
    if not per_seed:
        val = [r for r in read_metrics(prior_dir(run)) if r.get("split") == "val"]
        per_seed.append({"seed": "existing", "val_nll_bits": val[-1]["nll_bits"], "train_seconds": None})
    figures = val_figures(run)
    rates = speed(run, args.n, args.rounds)
    res = {"run": str(run), "per_seed": per_seed, **figures,
           "codes_per_sec": rates, "kv_speedup": rates["kv cache"] / rates["no cache"],
           "machine": machine_info(1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    rows = [[str(s["seed"]), f"{s['val_nll_bits']:.3f}", f"{figures['histogram_entropy_bits']:.3f}",
             f"{figures['fixed_bits']:.3f}", f"{1 - s['val_nll_bits'] / figures['fixed_bits']:.1%}",
             f"{s['train_seconds']}"] for s in per_seed]
    print(markdown_table(["prior seed", "prior NLL (bits/code, val)", "histogram entropy", "fixed log2 K",
                          "saved vs fixed", "prior train s"], rows))
    print(markdown_table([f"sampling (batch {args.n}, 1 thread)", "codes/s"],
                         [[k, f"{v:.0f}"] for k, v in rates.items()]))
    print(f"KV cache speed-up: {res['kv_speedup']:.1f}x; written {args.out}")


if __name__ == "__main__":
    main()
