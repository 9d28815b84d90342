"""Low-rate image compression against JPEG and WebP: ``python -m benchmarks.compress [--quick] [--seeds N | --seed S]``.

1. Data (built once into ``--work``): scikit-image's bundled photographs. Training: astronaut, rocket,
   immunohistochemistry, hubble_deep_field, retina (RGB) and camera, moon, coins, clock, brick, grass,
   gravel (gray, as RGB), cut into 20000 seeded 64x64 crops (a crop per file keeps data loading and the
   code histogram, counted over 512 whole train files, cheap).
   Held out, full resolution, never trained on: chelsea (451x300), coffee (600x400) and the left view of
   stereo_motorcycle (741x500).
2. Training: ``configs/image/compress.yaml`` for ``--steps`` steps (default: the recipe's
   ``train.max_steps``) per seed, on the CPU, under whatever ``nice`` the caller uses; a finished run of
   the same seed and steps in ``--work`` is reused.
3. RD: ``ndvq.codec.rd.evaluate_rd`` on the held-out photographs (real ``.ndvq`` files with the run's code
   histogram, one row per residual level count, JPEG and WebP matched to each file's size, BD-rate), plus
   the file sizes against fixed-length codes, and compress / decompress throughput.

Writes ``docs/benchmarks-compress.md`` (``--quick``: a smoke run of a few steps that writes only
``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from benchmarks.common import ROOT, machine_info, markdown_table, set_threads

TRAIN_PHOTOS = ("astronaut", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
                "camera", "moon", "coins", "clock", "brick", "grass", "gravel")
HELD_OUT = ("chelsea", "coffee", "motorcycle")
RECIPE = ROOT / "configs" / "image" / "compress.yaml"
NOTES_MARK = "## Notes (by hand"
"""Everything from this heading on in the Markdown is kept when the page is rewritten."""
#: CompressAI's published bmshj2018-factorized (quality 1 and 2, MSE) on Kodak: (bpp, PSNR dB)
COMPRESSAI_KODAK = ((0.123, 26.91), (0.288, 29.62))


def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)  # [H, W] -> [H, W, 3]
    return np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)


def prepare_data(work: Path, crops: int, size: int = 64) -> tuple[Path, Path]:
    """``(train root with train/ + test/, held-out folder)``: seeded crops of the training photographs,
    centre crops of the held-out ones for validation, and the held-out photographs at full resolution."""
    from PIL import Image

    root, held = work / "data", work / "heldout"
    done = root / f".done-{crops}-{size}"
    if done.is_file():
        return root, held
    for d in (root / "train", root / "test", held):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    photos = [_photo(n) for n in TRAIN_PHOTOS]
    areas = np.array([p.shape[0] * p.shape[1] for p in photos], np.float64)
    for j, k in enumerate(rng.choice(len(photos), size=crops, p=areas / areas.sum())):
        p = photos[k]
        for _ in range(20):  # redraw nearly flat crops (the retina's black border)
            y, x = rng.integers(0, p.shape[0] - size + 1), rng.integers(0, p.shape[1] - size + 1)
            crop = p[y: y + size, x: x + size]
            if crop.std() >= 4:
                break
        Image.fromarray(crop).save(root / "train" / f"{TRAIN_PHOTOS[k]}_{j:05d}.png")
    for name in HELD_OUT:
        img = _photo(name)
        Image.fromarray(img).save(held / f"{name}.png")
        h, w = img.shape[0] // 2, img.shape[1] // 2
        Image.fromarray(img[h - size // 2: h + size // 2, w - size // 2: w + size // 2]).save(root / "test" / f"{name}.png")
    done.write_text("ok\n")
    return root, held


def train_seed(work: Path, data: Path, seed: int, steps: int, extra: list[str]) -> tuple[Path, float | None]:
    """Train the recipe (or reuse a finished run of this seed and step count); ``(run dir, seconds)``."""
    from ndvq.cli import main
    from ndvq.run.rundir import read_metrics

    name = f"seed{seed}-steps{steps}"
    run = work / "runs" / name
    if (run / "checkpoints" / "last.ckpt").is_file():
        recs = read_metrics(run / "metrics.jsonl")
        if recs and max(r.get("step", 0) for r in recs) >= steps:
            return run, None
    t0 = time.perf_counter()
    code = main(["train", "-c", str(RECIPE), f"data.root={data}", f"run.root={work / 'runs'}", f"run.name={name}",
                 f"train.seed={seed}", f"train.max_steps={steps}", "train.loggers=[jsonl]", "--overwrite", *extra])
    if code != 0:
        sys.exit(f"training seed {seed} failed (exit {code})")
    return run, time.perf_counter() - t0


def bits_and_throughput(run: Path, held: Path) -> tuple[dict, dict]:
    """One timed compress + decompress of the held-out photographs (all levels, histogram model, model loading
    included; after the RD evaluation, so imports and the stored histogram are warm): per file the file size
    against fixed-length codes, the entropy-coded payload and the codes' empirical entropy; pixels per second."""
    import torch

    from ndvq.codec import compress_files, decompress_files, read_codes
    from ndvq.codec.format import unpack
    from ndvq.codec.rd import read_image_rgb
    from ndvq.metrics import entropy_bits
    from ndvq.run.infer import load_run_model

    files = sorted(held.glob("*.png"))
    pixels = sum(int(np.prod(read_image_rgb(f).shape[:2])) for f in files)
    t0 = time.perf_counter()
    packed = compress_files(run, files, held.parent / "packed-all", prior="none")
    t1 = time.perf_counter()
    decompress_files(packed, held.parent / "decoded-all")
    t2 = time.perf_counter()
    bits = {}
    sizes = list(load_run_model(run).model.codebook_sizes)
    for p in packed:
        grids, header = read_codes(p)
        codes = grids[0].reshape(-1, grids[0].shape[-1]) if grids[0].ndim > 2 else grids[0].reshape(-1, 1)
        fixed = codes.shape[0] * sum(math.log2(k) for k in sizes[: codes.shape[1]])
        ent = sum(entropy_bits(torch.bincount(codes[:, g].long(), minlength=sizes[g])[None]) for g in range(codes.shape[1]))
        payload = 4 * len(unpack(p.read_bytes(), p.name)[1])  # the entropy-coded words (uint32)
        bits[p.stem] = {"file_bits": 8 * p.stat().st_size, "fixed_bits": fixed, "entropy_bits": ent * codes.shape[0],
                        "payload_bits": 8 * payload, "model": header["probability_model"]["kind"]}
    return bits, {"pixels": pixels, "compress_px_s": pixels / (t1 - t0), "decompress_px_s": pixels / (t2 - t1)}


def _trained(run: Path) -> tuple[int, float]:
    """``(step, training seconds)`` of a run's last checkpoint."""
    from ndvq.run.checkpoint import load_checkpoint

    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["state"]
    return int(state["step"]), float(state.get("elapsed", float("nan")))


def low_rate_verdict(rows: list[dict], limit: float = 0.25) -> list[list]:
    """Per held-out file and level count with ndvq bpp <= ``limit``: ndvq minus JPEG in PSNR and MS-SSIM."""
    out = []
    for r in rows:
        n, j = r["ndvq"], r["jpeg"]
        if n["bpp"] <= limit:
            out.append([r["file"], r["levels"], n["bpp"], j["bpp"], n["psnr"] - j["psnr"],
                        (n["ms_ssim"] - j["ms_ssim"]) if n["ms_ssim"] is not None and j["ms_ssim"] is not None else float("nan")])
    return out


def _doc(args, info: dict, seeds: list[dict], steps: int) -> str:
    from ndvq.codec.rd import format_rd_table

    cmds = list(dict.fromkeys(s.get("command") or "python -m benchmarks.compress " + " ".join(
        a for a in sys.argv[1:] if a != "--doc-only") for s in seeds))
    cmd = "`, `".join(cmds) + ("` (one process per seed, side by side" if len(cmds) > 1 else "` (")
    lines = ["# Benchmark: low-rate image compression against JPEG and WebP", "",
             f"Command{'s' if len(cmds) > 1 else ''}: `{cmd}, from the repository root). Machine: {info.get('cpu', '?')}, "
             f"{info.get('cores', '?')} CPU(s), {args.threads} torch threads, torch {info.get('torch', '?')}, "
             f"{info.get('date', '?')}; the machine was shared with other jobs (load average "
             f"{info.get('load average at start', '?')}), so times are upper bounds.", "",
             f"Recipe: `configs/image/compress.yaml` (8x downsampling, videogpt backbone, residual VQ 4 levels x 64 "
             f"codes with a Euclidean lookup in the 32-d latent and quantizer dropout 0.5, MSE), trained {steps} steps x 16 crops of 64x64 per seed on the "
             f"scikit-image photographs {', '.join(TRAIN_PHOTOS)} (gray ones as RGB). Held out, full resolution: "
             f"{', '.join(HELD_OUT)} (motorcycle = `stereo_motorcycle()[0]`). Files are real `.ndvq` files "
             "(header included) entropy-coded with the run's code histogram, the file's own or the adaptive one, "
             "whichever gives the smallest file (no prior); JPEG and WebP are Pillow's "
             "at the quality (1..95, bisection) whose file size is closest to the `.ndvq` file.", ""]
    if getattr(args, "run", None) is not None:
        import yaml

        planned = yaml.safe_load((args.run / "config.yaml").read_text())["train"]["max_steps"]
        lines += [f"Evaluated run (`--run`): `{args.run}`, its last checkpoint at step {steps} of a "
                  f"train.max_steps={planned} cosine schedule" + (" (stopped early: the LR had not decayed fully)"
                                                                  if steps < planned else "") + ".", ""]
    for s in seeds:
        res = s["rd"]
        t = "reused" if s["train_s"] is None else f"{s['train_s'] / 60:.1f} min, {s['train_s'] / steps:.1f} s/step"
        lines += [f"## Seed {s['seed']} (training {t}; RD evaluation {s['rd_s']:.0f} s)", "", format_rd_table(res), ""]
        v = low_rate_verdict(res["rows"])
        if v:
            dp, dm = float(np.mean([x[4] for x in v])), float(np.nanmean([x[5] for x in v]))
            met = "met" if dp >= 0 and dm >= 0 else "not met"
            lines += ["At <= 0.25 bpp, ndvq minus JPEG at (nearly) equal file size (JPEG's own bpp beside it: "
                      "below about 0.19 bpp even JPEG quality 1 is larger than the .ndvq file):", "",
                      markdown_table(["file", "levels", "ndvq bpp", "JPEG bpp", "dPSNR (dB)", "dMS-SSIM"], v), "",
                      f"Mean over these rows: dPSNR {dp:+.2f} dB, dMS-SSIM {dm:+.3f}: the goal (both >= 0) is "
                      f"**{met}** for this seed.", ""]
        fb = s["bits"]
        lines += ["File sizes against fixed-length codes (all levels), the entropy-coded payload and the codes' own "
                  "empirical entropy. The payload exceeds the entropy by the cost of the probability model: the run "
                  "histogram's mismatch, or the adaptive histogram's learning (about (K - 1)/2 log2(n) bits per "
                  "column); the file's own histogram pays with its table in the header instead:", "",
                  markdown_table(["file", "coded with", "file bits", "payload bits", "header bits",
                                  "fixed-length bits", "file / fixed", "empirical entropy bits", "payload / entropy"],
                                 [[k, v.get("model", "?"), v["file_bits"], v["payload_bits"],
                                   v["file_bits"] - v["payload_bits"], round(v["fixed_bits"]),
                                   v["file_bits"] / v["fixed_bits"], round(v["entropy_bits"]),
                                   v["payload_bits"] / v["entropy_bits"]] for k, v in fb.items()]), ""]
        tp = s["throughput"]
        lines += [f"Throughput (all levels, model loading included, {tp['pixels']} pixels): compress "
                  f"{tp['compress_px_s'] / 1e3:.0f} kpixel/s, decompress {tp['decompress_px_s'] / 1e3:.0f} kpixel/s.", ""]
    bd = [[s["seed"], s["rd"]["summary"]["bd_rate"]["jpeg"]["bd_rate_percent"],
           s["rd"]["summary"]["bd_rate"]["webp"]["bd_rate_percent"]] for s in seeds]
    verdicts = []
    for s in seeds:
        v = low_rate_verdict(s["rd"]["rows"])
        if v:
            dp, dm = float(np.mean([x[4] for x in v])), float(np.nanmean([x[5] for x in v]))
            verdicts.append([s["seed"], len(v), dp, dm, min(x[4] for x in v), "met" if dp >= 0 and dm >= 0 else "not met"])
    lines += ["## Low rate (<= 0.25 bpp) over seeds", "", "Per seed, the mean over its rows at <= 0.25 bpp of ndvq minus "
              "JPEG at (nearly) equal file size, and the worst row:", "",
              markdown_table(["seed", "rows", "mean dPSNR (dB)", "mean dMS-SSIM", "worst row dPSNR (dB)", "goal"],
                             verdicts), ""]
    lines += ["## BD-rate over seeds", "", "Bjontegaard delta rate of ndvq's PSNR-rate curve (over its level counts) "
              "against each reference's matched-size points, per file, over the PSNR range both cover (PCHIP in "
              "log-rate), averaged over the files; negative = ndvq needs fewer bits. `n/a`: no overlap.", "",
              markdown_table(["seed", "vs JPEG (%)", "vs WebP (%)"],
                             [[a, float("nan") if b is None else b, float("nan") if c is None else c] for a, b, c in bd]),
              "", "## Reference from other data", "",
              "CompressAI's published `bmshj2018-factorized` (MSE) on Kodak (768x512): "
              + ", ".join(f"{b} bpp -> {p} dB" for b, p in COMPRESSAI_KODAK)
              + ". Different images (Kodak, not these), a learned entropy model trained for days on a GPU; quoted "
              "for scale only.", "",
              "Prior bits: this benchmark codes with the histogram models only; a code prior (`ndvq prior RUN`, "
              "then `--prior auto`) lowers the rate further (docs/prior.md).", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 200 crops, 4 steps; writes only --out")
    ap.add_argument("--seeds", type=int, default=1, help="training seeds 0..N-1 (default 1)")
    ap.add_argument("--seed", type=int, action="append", default=None, help="train and evaluate only this seed "
                    "(repeatable; e.g. one process per seed); the Markdown covers every seed of the same --work and "
                    "step count measured so far")
    ap.add_argument("--steps", type=int, default=None, help="training steps per seed (default: the recipe's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for training (repeatable), e.g. --set train.max_steps=2250")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-compress", help="data and runs (reused)")
    ap.add_argument("--out", type=Path, default=None, help="Markdown (default docs/benchmarks-compress.md; none with --quick)")
    ap.add_argument("--run", type=Path, default=None, help="evaluate this run of the recipe instead of training "
                    "(e.g. a longer one); its step count and training time are read from its metrics.jsonl")
    ap.add_argument("--doc-only", action="store_true", help="rewrite the Markdown from the saved per-seed results "
                    "of the same --work/--steps/--quick, measuring nothing")
    args = ap.parse_args()
    set_threads(args.threads)
    from ndvq.codec.rd import evaluate_rd
    from ndvq.config import load_config

    steps = 4 if args.quick else (args.steps or load_config(RECIPE, []).train.max_steps)
    work = args.work / ("quick" if args.quick else "full")
    data, held = prepare_data(work, crops=200 if args.quick else 20000)
    extra = (["train.val_interval=2", "train.ckpt_interval=2", "train.batch_size=4"] if args.quick else []) + args.overrides
    todo = [] if args.doc_only else [0] if args.run else (args.seed or list(range(args.seeds)))
    for seed in todo:
        run, train_s = (args.run, None) if args.run else train_seed(work, data, seed, steps, extra)
        if args.run:
            steps, train_s = _trained(args.run)
        t0 = time.perf_counter()
        rd = evaluate_rd(run, held, prior="none")
        rd_s = time.perf_counter() - t0
        bits, tp = bits_and_throughput(run, held)
        saved = work / f"results-seed{seed}-steps{steps}.json"
        if train_s is None and saved.is_file():  # a reused run keeps the training time measured when it trained
            train_s = json.loads(saved.read_text()).get("train_s")
        result = {"seed": seed, "run": str(run), "train_s": train_s, "rd_s": rd_s, "rd": rd, "bits": bits,
                  "throughput": tp, "steps": steps, "machine": machine_info(args.threads),
                  "command": "python -m benchmarks.compress " + " ".join(sys.argv[1:])}
        saved.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"seed {seed}: BD-rate vs JPEG {rd['summary']['bd_rate']['jpeg']}, vs WebP {rd['summary']['bd_rate']['webp']}",
              flush=True)
    seeds = sorted((json.loads(f.read_text()) for f in work.glob(f"results-seed*-steps{steps}.json")),
                   key=lambda r: r["seed"])
    if not seeds:
        sys.exit(f"no results for {steps} steps in {work}")
    info = seeds[0]["machine"]
    text = _doc(args, info, seeds, steps)
    out = args.out if args.out is not None else (None if args.quick else ROOT / "docs" / "benchmarks-compress.md")
    print(text)
    if out is not None:
        old = out.read_text(encoding="utf-8") if out.is_file() else ""
        notes = old[old.index(NOTES_MARK):] if NOTES_MARK in old else ""  # hand-written findings are kept
        out.write_text(text + "\n" + ("\n" + notes if notes else ""), encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
