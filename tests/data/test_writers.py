"""Writers: every modality's file is valid and reads back; samples of every modality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ndvq.data import create_dataset, write_item, write_samples


def test_image_png_8bit_roundtrip(tmp_path):
    from PIL import Image

    x = torch.rand(3, 10, 12) * 2 - 1
    (p,) = write_item("image", x, tmp_path / "sub" / "img")
    assert p.suffix == ".png"
    back = np.asarray(Image.open(p)).astype(np.float32) / 127.5 - 1
    assert back.shape == (10, 12, 3) and np.abs(back - x.permute(1, 2, 0).numpy()).max() < 1 / 127.5 + 1e-6
    (g,) = write_item("image", x[:1], tmp_path / "gray")
    assert Image.open(g).mode == "L"


def test_image_16bit_and_float_sources(tmp_path):
    import tifffile
    from PIL import Image

    x = torch.linspace(-1, 1, 100).reshape(1, 10, 10)
    (p,) = write_item("image", x, tmp_path / "a", {"bit_depth": 16})
    arr = np.asarray(Image.open(p))
    assert p.suffix == ".png" and arr.dtype in (np.uint16, np.int32) and arr.max() == 65535
    (t,) = write_item("image", x.repeat(3, 1, 1), tmp_path / "b", {"bit_depth": 16})
    assert t.suffix == ".tif" and tifffile.imread(t).dtype == np.uint16
    (f,) = write_item("image", x, tmp_path / "c", {"bit_depth": "float", "value_min": -500.0, "value_max": 1500.0})
    a = tifffile.imread(f)
    assert a.dtype == np.float32 and a.min() == pytest.approx(-500) and a.max() == pytest.approx(1500)


def test_video_mp4_reads_back(tmp_path):
    x = torch.zeros(3, 6, 15, 17)
    for t in range(6):
        x[:, t] = t / 6 - 0.5
    (p,) = write_item("video", x, tmp_path / "clip", {"fps": 12.5})
    assert p.suffix == ".mp4"
    ds = create_dataset("video", "all", root=tmp_path, sequence_length=6)
    assert len(ds) == 1 and ds.item_info(0)["fps"] == pytest.approx(12.5)
    y = ds[0]["data"]
    assert y.shape == (3, 6, 16, 18)  # padded to even sizes for H.264
    assert torch.allclose(y.mean(dim=(0, 2, 3)), x.mean(dim=(0, 2, 3)), atol=0.05)


def test_audio_wav_has_its_rate(tmp_path):
    import soundfile as sf

    x = torch.sin(torch.linspace(0, 100, 4000))[None] * 0.5
    (p,) = write_item("audio", x, tmp_path / "a", {"sample_rate": 22050})
    data, rate = sf.read(str(p))
    assert rate == 22050 and data.shape == (4000,) and np.abs(data - x[0].numpy()).max() < 1e-3


def test_series_npy_destandardised(tmp_path):
    x = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    (p,) = write_item("series", x, tmp_path / "s", {"mean": [10.0, -5.0], "std": [2.0, 0.5], "standardized": True})
    a = np.load(p)
    assert a.shape == (3, 2) and np.allclose(a[:, 0], [10, 12, 8]) and np.allclose(a[:, 1], [-4, -5, -5])


def test_bad_shapes_and_modality(tmp_path):
    with pytest.raises(ValueError, match=r"\[C, S, S\]"):
        write_item("image", torch.zeros(8, 8), tmp_path / "x")
    with pytest.raises(ValueError, match="modality"):
        write_item("pointcloud", torch.zeros(3, 8), tmp_path / "x")
    with pytest.raises(ValueError, match="differ"):
        write_samples("image", torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 4), tmp_path)


@pytest.mark.parametrize("modality,shape,expect", [
    ("image", (3, 3, 8, 8), {"reconstructions.png"}),
    ("image", (2, 1, 8, 8), {"reconstructions.png"}),
    ("video", (2, 3, 4, 8, 8), {"reconstructions.gif"}),
    ("audio", (2, 1, 800), {"item0_input.wav", "item0_recon.wav", "item1_input.wav", "item1_recon.wav", "waveforms.png"}),
    ("series", (2, 3, 50), {"series.png"}),
    ("volume", (2, 1, 8, 6, 4), {"item0_input.nii.gz", "item0_recon.nii.gz", "item1_input.nii.gz",
                                 "item1_recon.nii.gz", "mid_slices.png"}),
])
def test_write_samples_every_modality(tmp_path, modality, shape, expect):
    from PIL import Image

    x = torch.rand(shape) * 2 - 1
    paths = write_samples(modality, x, x.flip(0), tmp_path / "s", {"sample_rate": 8000, "fps": 4})
    assert {p.name for p in paths} == expect and all(p.is_file() and p.stat().st_size > 0 for p in paths)
    for p in paths:
        if p.suffix in (".png", ".gif"):
            with Image.open(p) as im:
                im.verify()
    if modality == "video":
        with Image.open(paths[0]) as im:
            assert im.n_frames == 4
