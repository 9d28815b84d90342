"""Codebook usage benchmark (issue 5, point 6), written to docs/benchmarks-codebook.md.

The same small ``ndvq.VQVAE`` is trained for a fixed number of steps on real 32x32 RGB patches
(the built-in ``samples`` data: photographs bundled with scikit-image; the held-out split is cut
from a photograph not used for training) with each quantizer configuration. Reported per
configuration, on the held-out patches in eval mode: PSNR, the fraction of codes used at least
once ("alive"), perplexity of the code distribution; plus the training-window usage
(``CodeUsageTracker`` over the last 100 steps) and wall time.

One command (from the repository root)::

    /work/venv/bin/python -m benchmarks.codebook            # full: 1000 steps per configuration
    /work/venv/bin/python -m benchmarks.codebook --quick    # smoke run: 20 steps, small data

Options: ``--steps``, ``--only name1,name2`` (run some configurations; results of earlier runs
are kept in ``benchmarks/results/codebook.json`` and the table is rebuilt from all of them).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from benchmarks.common import ROOT, machine_info, markdown_table, set_threads

from ndvq.data import create_dataset
from ndvq.networks.vqvae import VQVAE
from ndvq.quantizers import CodeUsageTracker

CLASSIC = dict(cosine=False, codebook_dim=None)  # Euclidean lookup in embedding_dim (ndvq: cosine, 8 dims)
PLAIN = dict(update="gradient", init="random", restart="none", **CLASSIC)
#: name -> (n_codes, quantizer dict). n_codes is the model's (per-level / per-group) codebook size.
CONFIGS: dict[str, tuple[int, dict]] = {
    "plain VQ (gradient, random init, no restart, classic lookup)": (1024, dict(kind="vq", **PLAIN)),
    "default (EMA, k-means init, restart batch, cosine 8-dim lookup)": (1024, dict(kind="vq")),
    "default, K=8192": (8192, dict(kind="vq")),
    "default, K=8192, ema_accumulate_steps=4": (8192, dict(kind="vq", ema_accumulate_steps=4)),
    "default with Euclidean 8-dim lookup (cosine=false)": (1024, dict(kind="vq", cosine=False)),
    "default with Euclidean 8-dim lookup, K=8192": (8192, dict(kind="vq", cosine=False)),
    "default with classic lookup (cosine=false, codebook_dim=null)": (1024, dict(kind="vq", **CLASSIC)),
    "default with classic lookup, K=8192": (8192, dict(kind="vq", **CLASSIC)),
    "EMA only (random init, no restart, classic lookup)": (1024, dict(kind="vq", init="random", restart="none", **CLASSIC)),
    "EMA + k-means init, no restart (classic lookup)": (1024, dict(kind="vq", restart="none", **CLASSIC)),
    "plain + entropy regulariser 0.1": (1024, dict(kind="vq", **PLAIN, entropy_weight=0.1)),
    "default + restart from replay buffer": (1024, dict(kind="vq", restart="replay")),
    "default + gradient codebook update": (1024, dict(kind="vq", update="gradient")),
    "default + rotation trick": (1024, dict(kind="vq", rotation_trick=True)),
    "default + sampling T=1": (1024, dict(kind="vq", sample_temperature=1.0)),
    "default, grow 256 -> 1024 at step 300": (256, dict(kind="vq", grow_to=1024, grow_at_step=300)),
    "FSQ levels [8, 8, 4, 4] (1024)": (1024, dict(kind="fsq", levels=[8, 8, 4, 4])),
    "LFQ 2^10": (1024, dict(kind="lfq")),
    "SimVQ": (1024, dict(kind="simvq")),
    "residual VQ 2 x 1024": (1024, dict(kind="residual", num_quantizers=2)),
    "grouped VQ 2 x 1024": (1024, dict(kind="grouped", groups=2)),
}
DEFAULT_1024, DEFAULT_8192 = "default (EMA, k-means init, restart batch, cosine 8-dim lookup)", "default, K=8192"
SMALL_CROPS = 2048  # 131,072 tokens; the large sample is BIG_CROPS (1,048,576 tokens, >= 128 per code at K=8192)
BIG_CROPS = 16384
MODEL = dict(n_dims=2, in_channels=3, n_hiddens=32, n_res_layers=1, downsample=4, embedding_dim=64, n_head=0)
RESULTS = ROOT / "benchmarks" / "results" / "codebook.json"


def fresh_train_crops(n: int, seed: int = 999) -> torch.Tensor:
    """``n`` new random 32x32 crops of the *training* photographs (positions from another seed than the
    training patches): ``[n, 3, 32, 32]`` in ``[-1, 1]``. Measures usage on the training distribution."""
    from ndvq.data.samples import TRAIN_IMAGES, _photo

    g = torch.Generator().manual_seed(seed)
    photos = [torch.from_numpy(_photo(name)).permute(2, 0, 1).float() / 127.5 - 1 for name in TRAIN_IMAGES]
    out = []
    while len(out) < n:
        img = photos[int(torch.randint(len(photos), (1,), generator=g))]
        r = int(torch.randint(img.shape[1] - 31, (1,), generator=g))
        c = int(torch.randint(img.shape[2] - 31, (1,), generator=g))
        crop = img[:, r:r + 32, c:c + 32]
        if float(crop.std()) * 127.5 >= 4:  # skip nearly flat crops, as the samples data does
            out.append(crop)
    return torch.stack(out)


def _stack(ds, n: int | None = None) -> torch.Tensor:
    n = len(ds) if n is None else min(n, len(ds))
    return torch.stack([ds[i]["data"] for i in range(n)])  # [n, 3, 32, 32] in [-1, 1]


@torch.no_grad()
def evaluate(model: VQVAE, val: torch.Tensor, batch: int = 256) -> dict[str, float]:
    model.eval()
    se, counts = 0.0, None
    for chunk in val.split(batch):
        out = model(chunk)
        se += float(((out.reconstruction.clamp(-1, 1) - chunk) ** 2).sum())
        counts = out.counts if counts is None else counts + out.counts
    mse = se / val.numel()
    probs = counts / counts.sum(dim=1, keepdim=True)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)
    return {"psnr": 10 * math.log10(4.0 / mse), "alive": float((counts > 0).float().mean()),
            "perplexity": float(entropy.exp().mean()), "codes": int(counts.shape[1]),
            "codebooks": int(counts.shape[0])}


def run_config(name: str, n_codes: int, quantizer: dict, train: torch.Tensor, val: torch.Tensor,
               crops: torch.Tensor, steps: int, batch: int, lr: float, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = VQVAE(**MODEL, n_codes=n_codes, quantizer=dict(quantizer))
    model.validate_inputs = False
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    tracker = CodeUsageTracker(model.quantizer.n_codebooks, model.quantizer.n_codes, window=100)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.train()
    for _ in range(steps):
        x = train[torch.randint(0, len(train), (batch,), generator=g)]
        out = model(x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        tracker.update(out.counts)
    seconds = time.perf_counter() - t0
    res = evaluate(model, val)
    on_train = evaluate(model, crops[:SMALL_CROPS])
    res.update(train_alive=on_train["alive"], train_perplexity=on_train["perplexity"], train_psnr=on_train["psnr"])
    res.update(train_alive_big=evaluate(model, crops)["alive"], big_crops=len(crops))
    res.update(name=name, steps=steps, batch=batch, seconds=seconds,
               window_usage=float(tracker.window_usage()), quantizer=quantizer, n_codes=n_codes)
    return res


def targets_table(results: dict) -> list[str]:
    """The issue's usage targets, read from ``results`` (rows missing from the run show n/a)."""
    def alive(name):
        r = results.get(name)
        return None if r is None or "train_alive_big" not in r else 100 * r["train_alive_big"]

    rows = []
    for name, wanted in ((DEFAULT_1024, 95.0), (DEFAULT_8192, 90.0)):
        a = alive(name)
        rows.append([f"{name}: codes alive (1M tokens)", f">= {wanted:.0f}%", "n/a" if a is None else f"{a:.1f}%",
                     "n/a" if a is None else ("met" if a >= wanted else "**not met**")])
    for name, k in ((DEFAULT_1024, 1024), (DEFAULT_8192, 8192)):
        same_k = [r for n, r in results.items()
                  if n != name and "(seed " not in n and r.get("codes") == k and r.get("codebooks") == 1]
        if name in results and same_k:
            best = max(same_k, key=lambda r: r["psnr"])
            gap = best["psnr"] - results[name]["psnr"]
            rows.append([f"{name}: PSNR vs best single-codebook alternative at K={k} ({best['name']})",
                         "gap <= 0.3 dB", f"{results[name]['psnr']:.2f} vs {best['psnr']:.2f} dB (gap {gap:+.2f})",
                         "met" if gap <= 0.3 else "**not met**"])
    return ["Targets (issue 5):", "", markdown_table(["target", "wanted", "measured", ""], rows)]


def seed_spread(results: dict) -> list[str]:
    """Configurations run with several seeds (rows '<name> (seed N)' next to '<name>'): per-seed and mean."""
    groups: dict[str, list[tuple[int, dict]]] = {}
    for name, r in results.items():
        base, _, tail = name.partition(" (seed ")
        seed = int(tail.rstrip(")")) if tail else 0
        groups.setdefault(base, []).append((seed, r))
    rows = []
    for base, runs in groups.items():
        if len(runs) < 2 or not all("train_alive_big" in r for _, r in runs):
            continue
        runs.sort(key=lambda t: t[0])
        alive = [100 * r["train_alive_big"] for _, r in runs]
        psnr = [r["psnr"] for _, r in runs]
        rows.append([base, " / ".join(str(s) for s, _ in runs),
                     " / ".join(f"{a:.1f}" for a in alive) + f" (mean {sum(alive) / len(alive):.1f}, min {min(alive):.1f})",
                     " / ".join(f"{p:.2f}" for p in psnr) + f" (mean {sum(psnr) / len(psnr):.2f})"])
    if not rows:
        return []
    return ["Seed spread (`--seed N` runs of the same configuration: other initialisation and batch order;",
            "single-seed differences of a few tenths of a dB or a few % of codes are within this spread):", "",
            markdown_table(["configuration", "seeds", "alive % (1M tokens)", "held-out PSNR (dB)"], rows), ""]


def write_doc(path: Path, results: dict, info: dict, args) -> None:
    rows = []
    for name in [n for n in CONFIGS if n in results] + [n for n in results if n not in CONFIGS]:
        r = results[name]
        rows.append([name, r["codes"] if r["codebooks"] == 1 else f"{r['codebooks']} x {r['codes']}",
                     r["psnr"], 100 * r["train_alive"], 100 * r.get("train_alive_big", float("nan")), 100 * r["alive"],
                     r["train_perplexity"], r["perplexity"],
                     100 * r["window_usage"], r["steps"], r["seconds"]])
    steps = sorted({r["steps"] for r in results.values()})
    lines = [
        "# Codebook usage benchmark",
        "",
        "Produced by `python -m benchmarks.codebook" + (" --quick" if args.quick else "") + "` "
        "(full run: `/work/venv/bin/python -m benchmarks.codebook`).",
        "",
        f"Model: `ndvq.VQVAE({', '.join(f'{k}={v}' for k, v in MODEL.items())})`, latent 8x8 tokens per 32x32 patch;",
        f"Adam lr {args.lr}, batch {args.batch}, {', '.join(map(str, steps))} steps per configuration, seed 0 "
        "(rows marked '(seed N)': `--seed N`, same data, other initialisation and batch order).",
        f"Data: built-in `samples` (real photographs from scikit-image), {args.train_patches} training patches;",
        "the held-out split is cut from a photograph not used for training (chelsea).",
        "Columns (eval mode): PSNR (dB, data range [-1, 1]) on the held-out photograph; alive = % of codes used",
        "at least once when encoding (a) fresh crops of the training photographs (new positions: the",
        f"training distribution): the first {SMALL_CROPS} (131,072 tokens) and all {BIG_CROPS} (1,048,576 tokens: at",
        "least 128 tokens per code even at K=8192, the ratio at which published usage figures are measured,",
        "e.g. 12.8M ImageNet-val tokens for 100k codes; the targets are read on this column), and (b) the",
        "held-out photograph's patches (a different image: codes for content it lacks, e.g. star fields, stay",
        "unused there); perplexity of those code distributions (mean over codebooks); window usage = % of",
        "codes used in the last 100 training steps (with restarts on, re-seeded codes are used at once, so",
        "this stays near 100% by construction and is not a usage figure).",
        "",
        markdown_table(["machine", ""], [[k, v] for k, v in info.items()]),
        "",
        *targets_table(results),
        "",
        *seed_spread(results),
        markdown_table(["configuration", "codes", "held-out PSNR (dB)", "alive % (train crops, 131k tokens)",
                        "alive % (train crops, 1M tokens)", "alive % (held-out)", "perplexity (train crops)",
                        "perplexity (held-out)",
                        "window usage %", "steps", "train s"], rows),
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20 steps, 512 training patches: a smoke run")
    p.add_argument("--steps", type=int, default=None, help="training steps per configuration (default 1000)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-patches", type=int, default=None, help="default 16384 (val: 1/8 of it)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default=None, help="comma-separated substrings of configuration names to run")
    p.add_argument("--seed", type=int, default=0,
                   help="training seed (init and batch order); rows of seeds other than 0 are added as "
                        "'<name> (seed N)' and kept out of the targets table (default 0)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-codebook.md")
    p.add_argument("--results", type=Path, default=RESULTS, help="JSON of results, merged across runs")
    args = p.parse_args(argv)
    args.steps = args.steps or (20 if args.quick else 1000)
    args.train_patches = args.train_patches or (512 if args.quick else 16384)
    set_threads(args.threads)
    info = machine_info(args.threads)
    train = _stack(create_dataset("samples", "train", patch_size=[32, 32], sample_patches=args.train_patches))
    val = _stack(create_dataset("samples", "val", patch_size=[32, 32], sample_patches=args.train_patches))
    crops = fresh_train_crops(256 if args.quick else BIG_CROPS)
    results = {}
    if args.results.is_file() and not args.quick:
        results = json.loads(args.results.read_text())
    names = [n for n in CONFIGS if args.only is None or any(s.strip() in n for s in args.only.split(","))]
    start = time.perf_counter()
    for name in names:
        n_codes, quantizer = CONFIGS[name]
        r = run_config(name, n_codes, quantizer, train, val, crops, args.steps, args.batch, args.lr, seed=args.seed)
        if args.seed:
            name = r["name"] = f"{name} (seed {args.seed})"
        print(f"{name}: PSNR {r['psnr']:.2f} dB, alive {100 * r['train_alive']:.1f}% / {100 * r['train_alive_big']:.1f}% / "
              f"{100 * r['alive']:.1f}%, perplexity {r['perplexity']:.0f}, "
              f"window usage {100 * r['window_usage']:.1f}%, {r['seconds']:.0f} s", flush=True)
        results[name] = r
        if not args.quick:
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(json.dumps(results, indent=1))
        write_doc(args.out, results, info, args)
    print(f"{len(names)} configurations in {time.perf_counter() - start:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
