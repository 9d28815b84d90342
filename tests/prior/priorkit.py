"""Helpers of the prior tests: tiny data of each kind, tiny trained runs, the tiny prior options."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY = ["model.videogpt.n_hiddens=16", "model.videogpt.num_res_blocks=1", "model.embedding_dim=8", "model.n_codes=32",
        "model.videogpt.n_head=0", "model.videogpt.norm=group", "model.videogpt.norm_num_groups=8",
        "train.batch_size=4", "train.sample_interval=1000", "train.num_workers=0", "train.doctor_warnings=false",
        "train.max_steps=2", "train.val_interval=2", "train.log_interval=1"]

#: A small prior that trains in about a second.
PRIOR = ["d_model=16", "n_layers=1", "n_heads=2", "batch_size=4", "log_interval=1", "val_interval=2", "val_tiles=8",
         "warmup_steps=1"]


def _audio(path: Path, seed: int) -> None:
    import soundfile as sf

    t = np.arange(4096) / 8000
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * (220 + 50 * seed) * t)).astype(np.float32), 8000)


def _series(path: Path, seed: int) -> None:
    t = np.arange(256)[:, None]
    np.savetxt(path, np.sin(t / (5 + seed) + np.arange(2)[None]), delimiter=",", header="a,b", comments="")


def _volume(path: Path, seed: int) -> None:
    import nibabel as nib

    v = np.random.default_rng(seed).normal(100, 20, size=(16, 16, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(v, np.eye(4)), str(path))


KINDS = {
    "image": (None, ["data.kind=samples", "data.patch_size=[16,16]", "data.sample_patches=16",
                     "model.videogpt.downsample=[4,4]"]),
    "audio": ((_audio, ".wav"), ["model.n_dims=1", "model.in_channels=1", "model.videogpt.downsample=[4]",
                                 "data.segment_length=256"]),
    "series": ((_series, ".csv"), ["model.n_dims=1", "model.in_channels=2", "model.videogpt.downsample=[4]",
                                   "data.segment_length=32"]),
    "volume": ((_volume, ".nii.gz"), ["model.n_dims=3", "model.in_channels=1", "model.videogpt.downsample=[4,4,4]",
                                      "data.patch_size=[8,8,8]", "train.batch_size=2"]),
}


def make_data(root: Path, kind: str, n: int = 3) -> list[str]:
    """Files of ``kind`` in ``root/train`` (and two in ``root/test``); returns the data overrides."""
    writer, suffix = KINDS[kind][0]
    for split, count in (("train", n), ("test", 2)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            writer(root / split / f"{kind}{i}{suffix}", i + (100 if split == "test" else 0))
    return [f"data.kind={kind}", f"data.root={root}"]


def make_run(root: Path, kind: str = "image", extra: list[str] = ()) -> Path:
    """Train a 2-step tiny VQ run of ``kind`` under ``root`` and return its directory."""
    from ndvq.config import load_config
    from ndvq.run.train import train

    data = make_data(root / "data", kind) if KINDS[kind][0] is not None else []
    cfg = load_config(None, [*TINY, *KINDS[kind][1], *data, *extra, f"run.root={root}", "run.name=r"])
    return train(cfg).run_dir
