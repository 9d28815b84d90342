"""Fidelity of the data layer per modality: what share of the training items is padding, and whether
``ndvq decode`` gives back the files that went in.

``python -m benchmarks.fidelity [--steps N] [--out benchmarks/results/fidelity.json]`` builds real
files on the fly (``tests/fidelity/realfiles.py``: short 8 kHz clips plus one long recording, CSV
series with 5 columns plus a 1-column file, odd-sized NIfTI volumes, 64x64 float TIFFs in the medical
layout, one MP4), and per modality

1. measures the mean padding share of the training items with the settings of the issue report
   (before) and with the fix the start summary suggests (after);
2. trains a tiny model for ``--steps`` steps (CPU) with the "after" settings;
3. runs ``ndvq eval`` over all files and ``encode`` + ``decode``, and compares every decoded file with
   its original: name, shape / length, sample or frame rate, affine, column names, and the PSNR
   between the files (in the units the model saw, ``ndvq.data.fidelity``) against eval's PSNR.

Prints a Markdown table (the one in docs/data.md) and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fidelity"))
import realfiles as rf  # noqa: E402

TINY = ["model.videogpt.n_hiddens=16", "model.videogpt.num_res_blocks=1", "model.embedding_dim=8",
        "model.n_codes=64", "model.videogpt.n_head=0", "model.videogpt.norm=group",
        "model.videogpt.norm_num_groups=8", "train.batch_size=4", "train.log_interval=10",
        "train.val_batches=2", "train.sample_interval=100000", "train.num_workers=0", "train.warmup_steps=0",
        "train.doctor_warnings=false", "train.accelerator=cpu"]

#: modality -> (file builder, data options "before" (the issue's report), "after" (the suggested fix), model)
CASES = {
    "audio": (lambda d: rf.speech_clips(d, n=12, long_seconds=3.0),
              {"sample_rate": 16000, "segment_length": 16384}, {"segment_length": 4096},
              ["model.n_dims=1", "model.in_channels=1", "model.videogpt.downsample=[4]"]),
    "series": (lambda d: rf.mixed_csvs(d, n5=6),
               {"segment_length": 256}, {"segment_length": 64},
               ["model.n_dims=1", "model.in_channels=5", "model.videogpt.downsample=[4]"]),
    "volume": (lambda d: rf.odd_niftis(d, n=3),
               {"patch_size": [64, 64, 64]}, {"patch_size": [16, 16, 16], "patches_per_item": 4},
               ["model.n_dims=3", "model.in_channels=1", "model.videogpt.downsample=[4,4,4]"]),
    "image": (lambda d: rf.medical_tiffs(d, n=6, size=64),
              {"patch_size": [256, 256], "channels": 1}, {"patch_size": [64, 64], "channels": 1},
              ["model.n_dims=2", "model.in_channels=1", "model.videogpt.downsample=[4,4]"]),
    "video": (lambda d: rf.one_video(d, n_frames=48, h=24, w=32),
              {"sequence_length": 64}, {"sequence_length": 8},
              ["model.n_dims=3", "model.in_channels=3", "model.videogpt.downsample=[2,4,4]"]),
}


def padding_share(kind: str, root: Path, options: dict) -> float:
    from ndvq.data import create_dataset

    return float(create_dataset(kind, "train", root=root, train_split=0.75, **options).padding_share())


def _over(options: dict) -> list[str]:
    return [f"data.{k}={json.dumps(v)}" for k, v in options.items()]


def measure(kind: str, work: Path, steps: int) -> dict:
    """One modality: padding before/after, then train, eval, encode, decode and compare the files."""
    from ndvq.config import load_config
    from ndvq.data.fidelity import file_facts, file_psnr, model_units
    from ndvq.run import train as loop
    from ndvq.run.infer import decode, encode, evaluate

    make, before, after, model = CASES[kind]
    data = work / kind / "data"
    make(data)
    row = {"modality": kind, "padding_before": padding_share(kind, data, before),
           "padding_after": padding_share(kind, data, after), "before": before, "after": after}
    t0 = time.time()
    cfg = load_config(None, TINY + model + _over(after) + [
        f"data.kind={kind}", f"data.root={data}", "data.train_split=0.75", f"train.max_steps={steps}",
        f"train.val_interval={steps}", f"train.ckpt_interval={steps}", f"run.root={work / kind}", "run.name=r"])
    run = loop.train(cfg).run_dir
    metrics = evaluate(run, data=data, split="all", out=work / kind / "eval.json")
    npz = encode(run, work / kind / "codes.npz", data=data)
    written = decode(run, npz, work / kind / "decoded")
    z = np.load(npz, allow_pickle=False)
    rng = float(z["data_range"]) if kind == "series" else 2.0
    psnrs, same, examples = [], 0, []
    for name, out, info in zip(z["names"], written, (json.loads(str(s)) for s in z["infos"])):
        a, b = file_facts(kind, str(name)), file_facts(kind, out)
        ok = b["name"].split(".")[0] == a["name"].split(".")[0] and \
            {k: v for k, v in a.items() if k != "name"} == {k: v for k, v in b.items() if k != "name"}
        same += ok
        examples.append({"original": a, "decoded": b})
        psnrs.append(file_psnr(model_units(kind, str(name), info), model_units(kind, out, info), rng))
    row.update(files=len(written), files_matching=same, eval_psnr=metrics["psnr"], file_psnr=float(np.mean(psnrs)),
               skipped=metrics.get("skipped_files", 0), example=examples[0], seconds=round(time.time() - t0, 1))
    return row


def _fmt_facts(f: dict) -> str:
    extra = {k: v for k, v in f.items() if k in ("rate", "columns")}
    text = f"{f['name']} {f['shape']}"
    if "rate" in extra:
        text += f" @ {extra['rate']}"
    if "columns" in extra:
        text += f" cols {len(extra['columns'])}"
    return text


def table(rows: list[dict]) -> str:
    head = ("| modality | padding before | padding after | eval PSNR (dB) | decoded-file PSNR (dB) | "
            "decoded files matching name/shape/rate | example (original -> decoded) |\n|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        ex = r["example"]
        lines.append(f"| {r['modality']} | {r['padding_before']:.0%} ({_opts(r['before'])}) | "
                     f"{r['padding_after']:.0%} ({_opts(r['after'])}) | {r['eval_psnr']:.2f} | {r['file_psnr']:.2f} | "
                     f"{r['files_matching']}/{r['files']}" + (f" ({r['skipped']} skipped)" if r["skipped"] else "")
                     + f" | {_fmt_facts(ex['original'])} -> {_fmt_facts(ex['decoded'])} |")
    return "\n".join(lines)


def _opts(o: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in o.items() if k != "channels")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60, help="training steps per modality (default 60)")
    p.add_argument("--only", nargs="*", default=list(CASES), help="modalities (default: all)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fidelity.json")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(kind, Path(tmp), args.steps) for kind in args.only]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1, default=str))
    print(table(rows))


if __name__ == "__main__":
    main()
