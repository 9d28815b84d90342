"""Whole files in, the same files out: per modality, train a tiny model on real files built on the
fly, then eval -> encode -> decode and check every decoded file against its original: same name,
shape / length, rate, affine or columns, and eval's PSNR equal to the PSNR between the files
(in the units the model saw, ``ndvq.data.fidelity``) within 0.05 dB."""

from __future__ import annotations

import json

import numpy as np
import pytest
import realfiles as rf

from ndvq.config import load_config
from ndvq.data.fidelity import file_facts, file_psnr, model_units
from ndvq.run import train as loop
from ndvq.run.infer import decode, encode, evaluate

TINY = ["model.videogpt.n_hiddens=16", "model.videogpt.num_res_blocks=1", "model.embedding_dim=8",
        "model.n_codes=32", "model.videogpt.n_head=0", "model.videogpt.norm=group",
        "model.videogpt.norm_num_groups=8", "train.max_steps=3", "train.batch_size=2", "train.log_interval=1",
        "train.val_interval=3", "train.val_batches=1", "train.ckpt_interval=3", "train.sample_interval=1000",
        "train.num_workers=0", "train.warmup_steps=0", "train.doctor_warnings=false", "train.accelerator=cpu"]

CASES = {
    "audio": (lambda d: rf.speech_clips(d, n=4, long_seconds=1.3),
              ["data.kind=audio", "model.n_dims=1", "model.in_channels=1", "model.videogpt.downsample=[4]",
               "data.segment_length=2048", "data.train_split=0.75"]),
    "series": (lambda d: rf.mixed_csvs(d, n5=4),
               ["data.kind=series", "model.n_dims=1", "model.in_channels=5", "model.videogpt.downsample=[4]",
                "data.segment_length=64", "data.train_split=0.75"]),
    "volume": (lambda d: rf.odd_niftis(d, n=2),
               ["data.kind=volume", "model.n_dims=3", "model.in_channels=1", "model.videogpt.downsample=[4,4,4]",
                "data.patch_size=[16,16,16]", "data.train_split=0.5", "data.patches_per_item=2"]),
    "image": (lambda d: rf.medical_tiffs(d, n=4, size=24),
              ["data.kind=image", "model.n_dims=2", "model.in_channels=1", "model.videogpt.downsample=[4,4]",
               "data.patch_size=[16,16]", "data.channels=1", "data.train_split=0.75"]),
    "video": (lambda d: rf.one_video(d, n_frames=20, h=16, w=24),
              ["data.kind=video", "model.n_dims=3", "model.in_channels=3", "model.videogpt.downsample=[2,4,4]",
               "data.sequence_length=4"]),
}
TOLERANCE_DB = {"video": 0.6}  # the decoded MP4 is compressed again (H.264, 4:2:0); every other format is exact


def round_trip(modality: str, tmp_path):
    """Train, eval, encode and decode ``modality``; returns (eval result, [(original, decoded, info)], npz)."""
    make, over = CASES[modality]
    data = tmp_path / "data"
    make(data)
    res = loop.train(load_config(None, TINY + over + [f"data.root={data}", f"run.root={tmp_path}", "run.name=r"]))
    metrics = evaluate(res.run_dir, data=data, split="all", out=tmp_path / "eval.json")
    npz = encode(res.run_dir, tmp_path / "codes.npz", data=data)
    written = decode(res.run_dir, npz, tmp_path / "decoded")
    z = np.load(npz, allow_pickle=False)
    infos = [json.loads(str(s)) for s in z["infos"]]
    return metrics, list(zip([str(n) for n in z["names"]], written, infos)), z


@pytest.mark.slow
@pytest.mark.parametrize("modality", list(CASES))
def test_decode_returns_what_went_in(modality, tmp_path):
    metrics, files, z = round_trip(modality, tmp_path)
    assert metrics["n_items"] == len(files) >= 1
    psnrs = []
    rng = float(z["data_range"]) if modality == "series" else 2.0
    for original, decoded, info in files:
        a, b = file_facts(modality, original), file_facts(modality, decoded)
        assert b["name"].split(".")[0] == a["name"].split(".")[0], (a, b)
        assert {k: v for k, v in b.items() if k != "name"} == {k: v for k, v in a.items() if k != "name"}
        psnrs.append(file_psnr(model_units(modality, original, info), model_units(modality, decoded, info), rng))
    assert float(np.mean(psnrs)) == pytest.approx(metrics["psnr"], abs=TOLERANCE_DB.get(modality, 0.05))


@pytest.mark.slow
def test_audio_long_recording_is_one_file_and_padding_excluded(tmp_path):
    metrics, files, z = round_trip("audio", tmp_path)
    names = sorted(f[1].name for f in files)
    assert names == sorted({f"word_{i:02d}.wav" for i in range(5)}) and len(files) == 5
    long = next(f for f in files if f[1].name == "word_04.wav")
    assert file_facts("audio", long[1])["shape"] == [int(1.3 * 8000), 1]
    assert int(z["chunk"]) == 2048  # the 10400-sample file went through in 2048-sample pieces, one code grid
    lat = z["codes_item000004"] if "codes_item000004" in z else None
    assert lat is not None and lat.shape[0] == int(z["padded_shapes"][4][0]) // 4


@pytest.mark.slow
def test_series_skips_the_odd_file_and_keeps_columns(tmp_path):
    with pytest.warns(RuntimeWarning, match="gdp.csv"):
        metrics, files, _ = round_trip("series", tmp_path)
    assert len(files) == 4 and all(f[1].suffix == ".csv" for f in files)
    assert file_facts("series", files[0][1])["columns"] == rf._COLUMNS
    assert metrics["skipped_files"] == 1


def test_each_image_comes_back_in_its_own_channel_count(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    for i, (mode, size) in enumerate([("RGB", (37, 53)), ("L", (45, 71)), ("RGB", (40, 64)), ("L", (32, 32))]):
        arr = np.random.default_rng(i).integers(0, 256, (size[1], size[0], 3 if mode == "RGB" else 1), np.uint8)
        Image.fromarray(arr.squeeze()).convert(mode).save(data / f"im{i}_{mode}.png")
    over = ["data.kind=image", "model.n_dims=2", "model.in_channels=3", "model.videogpt.downsample=[4,4]",
            "data.patch_size=[16,16]", "data.channels=3", "data.train_split=0.75"]
    res = loop.train(load_config(None, TINY + over + [f"data.root={data}", f"run.root={tmp_path}", "run.name=r"]))
    written = decode(res.run_dir, encode(res.run_dir, tmp_path / "c.npz", data=data), tmp_path / "out")
    got = {p.name: (Image.open(p).mode, Image.open(p).size) for p in written}
    want = {p.name: (Image.open(p).mode, Image.open(p).size) for p in sorted(data.iterdir())}
    assert got == want  # gray files stay gray although the model saw 3 channels; sizes kept
