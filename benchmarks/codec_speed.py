"""``.ndvq`` file size against the codes' entropy, and compress / decompress throughput, on real photographs.

Uses a small trained image run (``--run``; default: trains the built-in default run, ``configs/default.yaml``,
600 steps on patches of astronaut, coffee, rocket, immunohistochemistry, hubble_deep_field, retina). The
photographs are full-resolution scikit-image images written as PNG: astronaut and coffee (whose patches
were trained on) and chelsea, stereo_motorcycle (left view) and camera (grey, as RGB), never seen in training.

Per photograph, with the histogram model (``prior="none"``):

* ``file``: the ``.ndvq`` size in bytes, = ``header`` + ``payload`` + 26 bytes of fixed fields and CRC;
* ``model``: which static model the file was coded with (the run's train-split histogram, or the file's own
  counts stored in its header, whichever gives the smaller file);
* ``run_hist_bits``: ``-sum log2 p(code)`` under the run histogram's integer tables;
* ``own_entropy_bits``: the codes' empirical entropy (each column's own histogram of this file's codes
  times the code count): the lower bound of any static per-column model; ``payload / own_entropy - 1``;
* ``fixed_bits``: ``log2(K)`` per code.

Throughput: pixels per second of ``compress_files`` and ``decompress_files`` on all photographs at once
(model load, PNG reading, encoder / decoder network, entropy coding, file writing), and of the entropy
stage alone (``encode_tokens`` / ``decode_tokens``), median of ``--repeats`` rounds.

Variable rate (``--levels-run RUN``, a residual-VQ image run): for every ``k`` of its levels, the ``.ndvq`` bits
per pixel (whole files) and the PSNR (dB, 8-bit RGB, peak 255) of the decompressed PNGs against the originals.

Run: ``nice -n 10 python benchmarks/codec_speed.py [--run RUN] [--levels-run RUN] [--threads 2]`` (writes
``benchmarks/results/codec_speed.json`` and prints a markdown table).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = {"astronaut": True, "coffee": True, "chelsea": False, "stereo_motorcycle": False, "camera": False}
"""name -> whether patches of it were in the default run's training set."""


def _photos(folder: Path) -> list[Path]:
    import skimage.data
    from PIL import Image

    out = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        img = img[0] if isinstance(img, tuple) else img
        img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
        out.append(folder / f"{name}.png")
        Image.fromarray(np.ascontiguousarray(img)).save(out[-1])
    return out


def _train(root: Path) -> Path:
    cmd = [sys.executable, "-m", "ndvq", "train", f"run.root={root}", "run.name=default"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return root / "default"


def _entropy_bits(grids, sizes) -> float:
    bits, col = 0.0, 0
    for g in grids:
        flat = g.reshape(-1, g.shape[-1] if g.ndim == 3 else 1).numpy()  # [positions, G]
        for c in range(flat.shape[1]):
            n = np.bincount(flat[:, c], minlength=sizes[col + c]).astype(np.float64)
            p = n[n > 0] / n.sum()
            bits += float(-(n[n > 0] * np.log2(p)).sum())
        col += flat.shape[1]
    return bits


def _sizes(run: Path, files: list[Path], packed: list[Path]) -> list[dict]:
    from ndvq.codec import read_codes
    from ndvq.codec.entropy import frequencies, ideal_bits
    from ndvq.codec.format import unpack
    from ndvq.codec.histogram import HISTOGRAM_FILE, HistogramModel

    stored = json.loads((run / HISTOGRAM_FILE).read_text())
    hist, sizes = HistogramModel(stored["counts"]), stored["codebook_sizes"]
    rows = []
    for f, p in zip(files, packed):
        grids, header = read_codes(p)
        blob = p.read_bytes()
        _, words = unpack(blob, str(p))
        g = grids[0].reshape(-1)  # one grid, one column (the default run)
        model_bits = ideal_bits(g.numpy(), frequencies(hist.column_probabilities(0)))
        own = _entropy_bits(grids, sizes)
        h, w = header["input_shape"][1:]
        rows.append({"photo": f.stem, "trained_on": PHOTOS[f.stem], "model": header["probability_model"]["kind"],
                     "pixels": h * w, "codes": int(g.numel()),
                     "file_bytes": len(blob), "header_bytes": len(blob) - 4 * len(words) - 26,
                     "payload_bytes": 4 * len(words), "run_hist_bits": model_bits, "own_entropy_bits": own,
                     "fixed_bits": g.numel() * math.log2(sizes[0]),
                     "payload_over_own_entropy": 32 * len(words) / own - 1,
                     "bpp_file": 8 * len(blob) / (h * w)})
    return rows


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _speeds(run: Path, files: list[Path], tmp: Path, repeats: int) -> dict:
    from ndvq.codec import compress_files, decompress_files, read_codes, token_model_for
    from ndvq.codec.coding import decode_tokens, encode_tokens
    from ndvq.codec.files import _layout
    from ndvq.run.infer import load_run_model

    pixels = 0
    packed = compress_files(run, files, tmp / "warm", prior="none")  # warm-up (and the histogram)
    t_c = _timed(lambda: compress_files(run, files, tmp / "c", prior="none"), repeats)
    t_d = _timed(lambda: decompress_files(packed, tmp / "d"), repeats)
    loaded = load_run_model(run)
    hist, _ = token_model_for(run, "none", loaded=loaded)
    jobs = []
    for p in packed:
        grids, header = read_codes(p)
        pixels += math.prod(header["input_shape"][1:])
        lay = _layout(loaded.model, header["padded_shape"], None, None)
        jobs.append((lay, lay.flatten(grids)))
    words = [encode_tokens(lay, tok, hist) for lay, tok in jobs]
    t_ec = _timed(lambda: [encode_tokens(lay, tok, hist) for lay, tok in jobs], repeats)
    t_ed = _timed(lambda: [decode_tokens(lay, w, hist) for (lay, _), w in zip(jobs, words)], repeats)
    return {"pixels": pixels, "compress_px_per_s": pixels / t_c, "decompress_px_per_s": pixels / t_d,
            "entropy_encode_px_per_s": pixels / t_ec, "entropy_decode_px_per_s": pixels / t_ed,
            "compress_s": t_c, "decompress_s": t_d}


def _psnr(a: Path, b: Path) -> float:
    from PIL import Image

    x = np.asarray(Image.open(a).convert("RGB"), np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), np.float64)
    return float(10 * np.log10(255.0**2 / np.mean((x - y) ** 2)))


def _levels(run: Path, files: list[Path], tmp: Path) -> list[dict]:
    from PIL import Image

    from ndvq.codec import compress_files, decompress_files
    from ndvq.codec.levels import residual_levels
    from ndvq.run.infer import load_run_model

    total = residual_levels(load_run_model(run).model)
    pixels = sum(Image.open(f).size[0] * Image.open(f).size[1] for f in files)
    rows = []
    for k in range(1, total + 1):
        packed = compress_files(run, files, tmp / f"k{k}", levels=k, prior="none")
        out = decompress_files(packed, tmp / f"d{k}")
        by_stem = {o.stem: o for o in out}
        psnr = [_psnr(f, by_stem[f.stem]) for f in files]
        rows.append({"levels": k, "bpp": 8 * sum(p.stat().st_size for p in packed) / pixels,
                     "psnr_mean": float(np.mean(psnr)), "psnr": dict(zip([f.stem for f in files], psnr))})
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, help="a trained image run (default: train the default run)")
    ap.add_argument("--levels-run", type=Path, help="a residual-VQ image run: bpp and PSNR for each --levels k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "codec_speed.json")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="ndvq-codec-bench-") as tmp:
        tmp = Path(tmp)
        run = args.run or _train(tmp / "runs")
        files = _photos(tmp)
        from ndvq.codec import compress_files

        rows = _sizes(run, files, compress_files(run, files, tmp / "sizes", prior="none"))
        speed = _speeds(run, files, tmp, args.repeats)
        levels = _levels(args.levels_run, files, tmp) if args.levels_run else None
    res = {"run": str(run), "threads": args.threads, "photos": rows, "speed": speed, "levels": levels}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print("| photo | trained on | model | pixels | codes | file bytes | header | payload | own entropy (bytes) | "
          "payload vs own entropy | run histogram (bytes) | fixed length (bytes) | bpp |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['photo']} | {'yes' if r['trained_on'] else 'no'} | {r['model']} | {r['pixels']} | {r['codes']} | "
              f"{r['file_bytes']} | {r['header_bytes']} | {r['payload_bytes']} | {r['own_entropy_bits'] / 8:.0f} | "
              f"{100 * r['payload_over_own_entropy']:+.2f}% | {r['run_hist_bits'] / 8:.0f} | {r['fixed_bits'] / 8:.0f} | "
              f"{r['bpp_file']:.4f} |")
    print(json.dumps(speed, indent=2))
    for r in levels or []:
        print(f"levels={r['levels']}: {r['bpp']:.4f} bpp, PSNR {r['psnr_mean']:.2f} dB")
    return res


if __name__ == "__main__":
    main()
