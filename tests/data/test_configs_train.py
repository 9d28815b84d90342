"""Every example config of configs/<modality>/ trains end to end through `ndvq train` (2 steps on tiny
real files), and a NIfTI volume survives `ndvq encode` + `ndvq decode` with its affine."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from datafiles import write_audio, write_nifti, write_png, write_video

from ndvq.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["model.n_hiddens=16", "model.embedding_dim=8", "model.n_codes=16", "model.n_res_layers=1",
         "train.max_steps=2", "train.batch_size=2", "train.val_interval=2", "train.val_batches=1",
         "train.ckpt_interval=2", "train.sample_interval=2", "train.log_interval=1", "train.num_workers=0",
         "train.warmup_steps=0", "train.accelerator=cpu"]


def _image(d: Path) -> list[str]:
    for i in range(6):
        write_png(d / f"{i}.png", h=40, w=48, seed=i)
    return ["data.resolution=[16,16]"]


def _video(d: Path) -> list[str]:
    for i in range(3):
        write_video(d / f"{i}.mp4", n_frames=20, h=24, w=24)
    return ["data.resolution=[16,16]", "data.sequence_length=4", "data.frame_stride=1", "data.clip_stride=4",
            "model.downsample=[2,4,4]"]


def _audio(d: Path) -> list[str]:
    for i in range(3):
        write_audio(d / f"{i}.wav", seconds=0.5, rate=8000)
    return ["data.segment_length=1024", "data.hop_length=512"]


def _series(d: Path) -> list[str]:
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        np.save(d / f"{i}.npy", rng.normal(size=(300, 3)).astype(np.float32))
    return ["data.segment_length=64"]


def _volume(d: Path) -> list[str]:
    for i in range(4):
        write_nifti(d / f"{i}.nii.gz", shape=(20, 18, 16), seed=i)
    return ["data.patch_size=[16,16,16]", "data.patches_per_item=2"]


@pytest.mark.slow
@pytest.mark.parametrize("modality,make", [("image", _image), ("video", _video), ("audio", _audio),
                                           ("series", _series), ("volume", _volume)])
def test_example_config_trains(tmp_path, modality, make):
    data = tmp_path / "data"
    extra = make(data)
    cfg = ROOT / "configs" / modality / "example.yaml"
    code = main(["train", "-c", str(cfg), f"data.root={data}", f"run.root={tmp_path / 'runs'}", "run.name=r",
                 *SMALL, *extra])
    assert code == 0
    run = tmp_path / "runs" / "r"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "metrics.jsonl").is_file()
    assert any(p.is_file() for p in (run / "samples").rglob("*"))
    if modality == "series":
        assert (run / "data_stats.json").is_file()


@pytest.mark.slow
def test_volume_affine_survives_encode_decode(tmp_path):
    aff = np.array([[0.8, 0, 0, -30.0], [0, 0.9, 0, 12.0], [0, 0, 2.5, 5.0], [0, 0, 0, 1]])
    for i in range(2):
        write_nifti(tmp_path / "data" / f"s{i}.nii.gz", shape=(20, 18, 16), affine=aff, seed=i)
    args = [f"data.root={tmp_path / 'data'}", f"run.root={tmp_path / 'runs'}", "run.name=r", *SMALL,
            "data.patch_size=[16,16,16]", "data.train_split=0.5"]
    assert main(["train", "-c", str(ROOT / "configs" / "volume" / "example.yaml"), *args]) == 0
    run = tmp_path / "runs" / "r"
    assert main(["encode", str(run), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "codes.npz")]) == 0
    assert main(["decode", str(run), str(tmp_path / "codes.npz"), "--out", str(tmp_path / "dec")]) == 0
    outs = sorted((tmp_path / "dec").glob("*.nii.gz"))
    assert len(outs) == 2
    for p in outs:
        img = nib.load(str(p))
        assert img.shape == (20, 18, 16) and np.allclose(img.affine, aff)
