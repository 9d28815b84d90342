"""Helpers of the codec tests: data files of each kind and tiny trained runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ndvq.cli import main

TINY = ["model.videogpt.n_hiddens=16", "model.videogpt.num_res_blocks=1", "model.embedding_dim=8", "model.n_codes=16",
        "model.videogpt.n_head=0", "model.videogpt.norm=group", "model.videogpt.norm_num_groups=8",
        "train.batch_size=2", "train.max_steps=2", "train.val_interval=2", "train.sample_interval=1000",
        "train.num_workers=0", "train.doctor_warnings=false"]


def png(path: Path, seed: int, size=(24, 20)) -> None:
    from PIL import Image

    low = np.random.default_rng(seed).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    Image.fromarray(low).resize(size, Image.BILINEAR).save(path)


def wav(path: Path, seed: int) -> None:
    import soundfile as sf

    t = np.arange(3000 + 100 * seed) / 8000
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * (220 + 50 * seed) * t)).astype(np.float32), 8000)


def nifti(path: Path, seed: int) -> None:
    import nibabel as nib

    v = np.random.default_rng(seed).normal(100, 20, size=(16, 14, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(v, np.diag([0.5, 0.5, 1.0, 1.0])), str(path))


KINDS = {
    # kind: (writer, suffix, overrides)
    "image": (png, ".png", ["model.n_dims=2", "model.in_channels=3", "model.videogpt.downsample=[4,4]",
                            "data.patch_size=[16,16]"]),
    "audio": (wav, ".wav", ["model.n_dims=1", "model.in_channels=1", "model.videogpt.downsample=[4]",
                            "data.segment_length=1024"]),
    "volume": (nifti, ".nii.gz", ["model.n_dims=3", "model.in_channels=1", "model.videogpt.downsample=[4,4,4]",
                                  "data.patch_size=[16,12,16]"]),
    "residual": (png, ".png", ["model.n_dims=2", "model.in_channels=3", "model.videogpt.downsample=[4,4]",
                               "data.patch_size=[16,16]", "model.bottleneck=residual",
                               "model.quantizer.num_quantizers=3", "model.quantizer.quantizer_dropout=0.5",
                               "model.quantizer.cosine=false"]),
    "hierarchical": (png, ".png", ["model.n_dims=2", "model.in_channels=3", "data.patch_size=[16,16]",
                                   "model.kind=hierarchical", "model.videogpt.downsample=[2,2]",
                                   "model.top.downsample=[2,2]", "model.top.n_codes=8"]),
}


class Run:
    """A trained tiny run: ``run_dir``, the held-out ``files`` (not trained on) and their folder ``test_dir``."""

    def __init__(self, run_dir: Path, test_dir: Path):
        self.run_dir, self.test_dir = run_dir, test_dir
        self.files = sorted(p for p in test_dir.iterdir() if p.is_file())


def make_run(root: Path, kind: str) -> Run:
    writer, suffix, over = KINDS[kind]
    data = root / "data"
    for split, count in (("train", 3), ("test", 2)):
        (data / split).mkdir(parents=True)
        for i in range(count):
            writer(data / split / f"{kind}{i}{suffix}", i + (100 if split == "test" else 0))
    modality = "image" if kind in ("residual", "hierarchical") else kind
    code = main(["train", *TINY, *over, f"data.kind={modality}", f"data.root={data}", f"run.root={root / 'runs'}",
                 "run.name=r"])
    assert code == 0
    return Run(root / "runs" / "r", data / "test")
