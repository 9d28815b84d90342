"""Is data loading the bottleneck? Loader samples/s vs. training samples/s, per modality.

For every dataset kind, small but realistic real files are written once into ``--data-dir``
(PNG photographs cut from scikit-image images, H.264 MP4 clips of a camera pan over a photograph,
44.1 kHz WAV music-like tones resampled to 16 kHz, CSV sensor logs, 96^3 NIfTI volumes) and then:

* **loader**: ``torch.utils.data.DataLoader(dataset, batch_size, shuffle=True, num_workers=0 | 2)``
  over up to ``--batches`` batches; the first batch (worker start-up) is not timed; samples/s =
  items delivered / wall time.
* **train**: full training steps (forward, backward, AdamW step) of the model of that modality's
  example config (``configs/<kind>/example.yaml``; ``configs/default.yaml`` for ``samples``, the
  default ``ndvq train`` model, plus a row for the VQVAE with every ``model.*`` key at its schema
  default: n_hiddens 128, 2 res layers with 2-head axial attention, the schema's norm - batch norm when
  the stored figures were measured, channel norm since 2026-12-03) on a real batch from
  the same dataset, same batch size; median of ``--steps`` timed steps after one warm-up step.
  samples/s = batch / step time.

* **shards** (``--shards``): the same train split written by ``ndvq shard`` (``ndvq.shard.write_shards``,
  4 shards) into ``--data-dir/<kind>-shards`` and streamed with ``data.shards`` (``ShardDataset.loader``,
  the run's loader: shuffle buffer, per-file decoding by the same decoders) with 0 and 2 workers, timed
  like the folder loader, folder and shards alternating ``--repeats`` times (medians); "shards /
  folder" compares the two with the same workers.

Data loading is not the bottleneck when loader samples/s (with the workers you train with) is
well above training samples/s. Loader and training are timed one after the other on the same
(possibly busy) machine, so compare within a row.

Run: ``OMP_NUM_THREADS=1 python -m benchmarks.data_loader [--kinds samples image ...] [--shards] [--out table.md]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from benchmarks.common import ROOT, machine_info, markdown_table, set_threads, time_calls

KINDS = ("samples", "image", "video", "audio", "series", "volume")


# ----------------------------------------------------------------------------------- data
def _photos() -> list[np.ndarray]:
    from skimage import data

    return [np.asarray(getattr(data, n)())[..., :3] for n in ("astronaut", "coffee", "chelsea", "rocket")]


def make_data(kind: str, root: Path) -> tuple[Path | None, list[str]]:
    """Write the files of ``kind`` under ``root`` (once); returns (folder, data overrides)."""
    d = root / kind
    done = d / ".complete"
    if kind == "samples":
        return None, []
    over = {"image": [], "video": [], "audio": [], "series": ["model.in_channels=3"], "volume": []}[kind]
    if done.is_file():
        return d, over
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    photos = _photos()
    if kind == "image":
        from PIL import Image

        for i in range(64):
            p = photos[i % len(photos)]
            y, x = rng.integers(0, p.shape[0] - 256), rng.integers(0, p.shape[1] - 256)
            Image.fromarray(p[y:y + 256, x:x + 256]).save(d / f"{i:03d}.png")
    elif kind == "video":
        import av

        for i in range(4):
            p = photos[i]
            with av.open(str(d / f"{i}.mp4"), "w") as out:
                s = out.add_stream("libx264", rate=25)
                s.width = s.height = 128
                s.pix_fmt = "yuv420p"
                for t in range(96):  # a camera pan across the photograph
                    fr = np.ascontiguousarray(p[40:168, t * 2: t * 2 + 128])
                    for pk in s.encode(av.VideoFrame.from_ndarray(fr, format="rgb24")):
                        out.mux(pk)
                for pk in s.encode():
                    out.mux(pk)
    elif kind == "audio":
        import soundfile as sf

        rate = 44100
        t = np.arange(10 * rate) / rate
        for i in range(4):
            notes = 220 * 2 ** (rng.integers(0, 24, size=40) / 12)
            f = np.repeat(notes, len(t) // 40 + 1)[: len(t)]
            sig = 0.3 * np.sin(2 * np.pi * np.cumsum(f) / rate) + 0.01 * rng.normal(size=len(t))
            sf.write(str(d / f"{i}.wav"), sig.astype(np.float32), rate)
    elif kind == "series":
        for i in range(8):
            tt = np.arange(5000)
            cols = [np.sin(tt / (20 + 5 * c)) + 0.1 * rng.normal(size=tt.size) for c in range(3)]
            rows = ["a,b,c"] + [",".join(f"{v:.5f}" for v in r) for r in zip(*cols)]
            (d / f"{i}.csv").write_text("\n".join(rows) + "\n")
    elif kind == "volume":
        import nibabel as nib

        zz, yy, xx = np.mgrid[0:96, 0:96, 0:96]
        for i in range(4):
            ball = ((zz - 48) ** 2 + (yy - 48) ** 2 + (xx - 48) ** 2 < (30 + 3 * i) ** 2)
            v = np.where(ball, 300.0, -1000.0) + rng.normal(0, 30, ball.shape)
            nib.save(nib.Nifti1Image(v.astype(np.float32), np.diag([0.8, 0.8, 1.5, 1])), str(d / f"{i}.nii.gz"))
    done.write_text("ok")
    return d, over


# ----------------------------------------------------------------------------------- timing
def config_for(kind: str, folder: Path | None, extra: list[str]):
    from ndvq.config import load_config

    path = ROOT / "configs" / ("default.yaml" if kind == "samples" else f"{kind}/example.yaml")
    over = ([f"data.root={folder}"] if folder else []) + extra
    return load_config(path, over)


def _items_per_second(batches, max_batches: int) -> float:
    """Items per second over ``max_batches`` batches of the iterable ``batches``; the first batch (worker
    start-up) is not timed."""
    n, t0 = 0, None
    for got, b in enumerate(batches, 1):
        if t0 is None:
            t0 = time.perf_counter()
        else:
            n += b["data"].shape[0]
        if got >= max_batches:
            break
    return n / (time.perf_counter() - t0) if n else float("nan")


def loader_rate(ds, batch: int, workers: int, max_batches: int) -> float:
    """Items per second delivered by a shuffling DataLoader over ``max_batches`` batches (epochs repeat
    when the dataset is smaller; workers persist across epochs); the very first batch is not timed."""
    dl = torch.utils.data.DataLoader(ds, batch_size=min(batch, len(ds)), shuffle=True, num_workers=workers,
                                     drop_last=True, persistent_workers=workers > 0)

    def forever(loader):
        while True:
            yield from loader

    rate = _items_per_second(forever(dl), max_batches)
    del dl
    return rate


def make_shards(cfg, folder: Path, out: Path) -> Path:
    """The train split of ``cfg`` as 4 tar shards in ``out`` (written once); returns ``out``."""
    import math
    import tempfile

    from ndvq.build import build_dataset
    from ndvq.shard import write_shards

    if not (out / "manifest.json").is_file():
        with tempfile.TemporaryDirectory() as stats:
            ds = build_dataset(cfg, "train", stats)
            write_shards(ds, folder, out, max_count=max(1, math.ceil(len(ds.files) / 4)))
    return out


def shard_rate(cfg, shards: Path, batch: int, workers: int, max_batches: int) -> float:
    """Items per second of the ``data.shards`` loader over ``max_batches`` batches (first one not timed)."""
    from ndvq.data.shards import shard_dataset

    ds = shard_dataset({**cfg.data.model_dump(), "shards": f"{shards}/shard-*.tar"}, "train")
    dl = ds.loader(epoch=0, batch_size=min(batch, len(ds)), seed=0, num_workers=workers)
    rate = _items_per_second(dl, max_batches)
    del dl
    return rate


def train_rate(cfg, x: torch.Tensor, steps: int) -> float:
    """Samples/s of full training steps of ``cfg``'s model on the batch ``x``."""
    from ndvq import build

    net, objective = build.build_model(cfg), build.build_objective(cfg)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.train.learning_rate)

    def step():
        opt.zero_grad(set_to_none=True)
        objective(x, net(x)).loss.backward()
        opt.step()

    return x.shape[0] / statistics.median(time_calls(step, warmup=1, repeats=steps))


def run(kinds, data_dir: Path, batches: int, steps: int, *, shards: bool = False, repeats: int = 1) -> list[dict]:
    from ndvq.build import build_dataset

    rows = []
    for kind in kinds:
        folder, extra = make_data(kind, data_dir)
        cfg = config_for(kind, folder, extra)
        ds = build_dataset(cfg, "train")
        batch = cfg.train.batch_size
        r0 = loader_rate(ds, batch, 0, batches)
        r2 = loader_rate(ds, batch, 2, batches)
        x = torch.stack([ds[i]["data"] for i in range(batch)])
        tr = train_rate(cfg, x, steps) if steps else float("nan")
        rows.append({"kind": kind, "item": list(x.shape[1:]), "batch": batch, "items": len(ds),
                     "loader_w0": r0, "loader_w2": r2, "train": tr})
        if shards and folder is not None:  # interleaved repeats, medians: the machine's load varies
            out = make_shards(cfg, folder, data_dir / f"{kind}-shards")
            for w in (0, 2):
                pairs = [(loader_rate(ds, batch, w, batches), shard_rate(cfg, out, batch, w, batches))
                         for _ in range(repeats)]
                rows[-1][f"loader_w{w}"] = statistics.median(p[0] for p in pairs)
                rows[-1][f"shards_w{w}"] = statistics.median(p[1] for p in pairs)
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if kind == "samples":  # also the VQVAE with every model.* key at its schema default (ndvq.config)
            from ndvq.config import load_config

            big = load_config(None, base={"data": {"kind": "samples", "patch_size": [32, 32]}})
            rows.append({**rows[-1], "kind": "samples, schema-default model", "train": train_rate(big, x, steps)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/ndvq_bench_data"))
    ap.add_argument("--batches", type=int, default=20, help="batches read per loader measurement (default 20)")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps (default 3; 0: no training rows)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    ap.add_argument("--shards", action="store_true", help="also time the data.shards loader on the same data")
    ap.add_argument("--repeats", type=int, default=3, help="--shards: interleaved folder/shard measurements, "
                    "medians (default 3)")
    ap.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    info = machine_info(args.threads)
    rows = run(args.kinds, args.data_dir, args.batches, args.steps, shards=args.shards, repeats=args.repeats)
    if args.shards:
        rows = [r for r in rows if "shards_w0" in r]
        table = markdown_table(
            ["kind", "item [C, *S]", "batch", "folder items/s (0 w)", "shards items/s (0 w)", "shards / folder (0 w)",
             "folder items/s (2 w)", "shards items/s (2 w)", "shards / folder (2 w)"],
            [[r["kind"], str(r["item"]), r["batch"], r["loader_w0"], r["shards_w0"], r["shards_w0"] / r["loader_w0"],
              r["loader_w2"], r["shards_w2"], r["shards_w2"] / r["loader_w2"]] for r in rows])
    else:
        table = markdown_table(
            ["kind", "item [C, *S]", "batch", "loader samples/s (0 workers)", "loader samples/s (2 workers)",
             "train samples/s", "loader (0 w) / train"],
            [[r["kind"], str(r["item"]), r["batch"], r["loader_w0"], r["loader_w2"], r["train"],
              r["loader_w0"] / r["train"]] for r in rows])
    text = table + "\n\n" + ", ".join(f"{k}: {v}" for k, v in info.items())
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    print(json.dumps({"rows": rows, "machine": info}))


if __name__ == "__main__":
    main()
