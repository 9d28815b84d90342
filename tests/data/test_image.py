"""Image folders: formats, channels, layouts, splits, crops, augmentation, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datafiles import corrupt, rgb, write_png

from ndvq.data import ImageFolder, create_dataset
from ndvq.data.common import fit_and_crop


def _check_range(x: torch.Tensor) -> None:
    assert x.dtype == torch.float32
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize("ext,mode,channels", [("png", "RGB", 3), ("jpg", "RGB", 3), ("bmp", "RGB", 3),
                                                ("png", "L", 1), ("png", "RGBA", 3)])
def test_formats_and_inferred_channels(tmp_path, ext, mode, channels):
    for i in range(3):
        write_png(tmp_path / f"im{i}.{ext}", mode=mode, seed=i)
    ds = create_dataset("image", "all", root=tmp_path)
    assert len(ds) == 3 and ds.channels == channels and ds.n_dims == 2 and ds.modality == "image"
    x = ds[1]["data"]
    assert x.shape == (channels, 20, 24) and ds[1]["index"] == 1
    _check_range(x)
    assert ds.data_range == 2.0


def test_png_values_are_exact(tmp_path):
    write_png(tmp_path / "a.png", h=4, w=5)
    x = create_dataset("image", "all", root=tmp_path)[0]["data"]
    ref = torch.from_numpy(rgb(4, 5)).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(x, ref, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_channels_option_converts(tmp_path, channels):
    write_png(tmp_path / "a.png", mode="RGB")
    write_png(tmp_path / "b.png", mode="L")
    write_png(tmp_path / "c.png", mode="RGBA")
    ds = create_dataset("image", "all", root=tmp_path, channels=channels)
    for i in range(3):
        assert ds[i]["data"].shape[0] == channels
    if channels == 4:  # an opaque RGB file gets alpha = 1
        assert torch.all(ds[0]["data"][3] == 1.0)


def test_16bit_and_float_tiff(tmp_path):
    import tifffile

    u16 = (np.arange(64 * 48, dtype=np.uint32).reshape(64, 48) * 20).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a16.tif", u16)
    f32 = np.linspace(-500, 1500, 64 * 48, dtype=np.float32).reshape(64, 48)
    tifffile.imwrite(tmp_path / "b32.tiff", f32)
    ds = create_dataset("image", "all", root=tmp_path)
    assert ds.channels == 1 and len(ds) == 2
    x16 = ds[0]["data"]
    assert x16.shape == (1, 64, 48)
    assert torch.allclose(x16[0], torch.from_numpy(u16.astype(np.float32) / 65535 * 2 - 1), atol=1e-5)
    xf = ds[1]["data"]  # float data outside [0, 1]: min/max scaled, recorded for the writer
    assert float(xf.min()) == pytest.approx(-1) and float(xf.max()) == pytest.approx(1)
    info = ds.item_info(1)
    assert info["bit_depth"] == "float" and info["value_min"] == pytest.approx(-500)
    assert ds.item_info(0)["bit_depth"] == 16


def test_16bit_png(tmp_path):
    from PIL import Image

    a = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "x.png")
    ds = create_dataset("image", "all", root=tmp_path)
    assert ds.item_info(0)["bit_depth"] == 16
    assert torch.allclose(ds[0]["data"][0], torch.from_numpy(a / 65535 * 2 - 1).float(), atol=1e-5)


def test_train_test_layout(tmp_path):
    for i in range(3):
        write_png(tmp_path / "train" / "cls" / f"{i}.png", seed=i)
    for i in range(2):
        write_png(tmp_path / "test" / f"{i}.png", seed=10 + i)
    tr, va, al = (create_dataset("image", s, root=tmp_path) for s in ("train", "val", "all"))
    assert (len(tr), len(va), len(al)) == (3, 2, 5)
    assert all("train" in str(p) for p in tr.files) and all("test" in str(p) for p in va.files)


def test_single_folder_split_is_deterministic_and_disjoint(tmp_path):
    for i in range(20):
        write_png(tmp_path / f"{i:02d}.png", h=8, w=8, seed=i)
    a = create_dataset("image", "train", root=tmp_path, train_split=0.75, split_seed=3)
    b = create_dataset("image", "train", root=tmp_path, train_split=0.75, split_seed=3)
    v = create_dataset("image", "val", root=tmp_path, train_split=0.75, split_seed=3)
    c = create_dataset("image", "train", root=tmp_path, train_split=0.75, split_seed=4)
    assert a.files == b.files and len(a) == 15 and len(v) == 5
    assert not set(a.files) & set(v.files)
    assert set(a.files) != set(c.files)  # the seed matters


def test_val_dir_and_subfolders(tmp_path):
    for sub, n in (("dente", 3), ("edente", 2), ("other", 4)):
        for i in range(n):
            write_png(tmp_path / "data" / sub / f"{i}.png", h=8, w=8, seed=i)
    for i in range(2):
        write_png(tmp_path / "val" / f"{i}.png", h=8, w=8)
    one = create_dataset("image", "all", root=tmp_path / "data", subfolders=["dente"], train_split=1.0)
    assert len(one) == 3
    both = create_dataset("image", "train", root=tmp_path / "data", subfolders=["dente", "edente"],
                          val_dir=tmp_path / "val")
    assert len(both) == 5
    val = create_dataset("image", "val", root=tmp_path / "data", subfolders=["dente", "edente"], val_dir=tmp_path / "val")
    assert len(val) == 2
    with pytest.raises(FileNotFoundError, match="nope"):
        create_dataset("image", "train", root=tmp_path / "data", subfolders=["nope"])


def test_resize_crop_patch_and_pad(tmp_path):
    write_png(tmp_path / "a.png", h=40, w=60)
    write_png(tmp_path / "b.png", h=30, w=20)
    with pytest.raises(ValueError, match="different sizes"):
        create_dataset("image", "all", root=tmp_path)
    for crop in ("center", "random", "resize"):
        ds = create_dataset("image", "train", root=tmp_path, resolution=[16, 16], crop=crop, train_split=1.0)
        assert all(ds[i]["data"].shape == (3, 16, 16) for i in range(2))
    ds = create_dataset("image", "train", root=tmp_path, patch_size=[12, 8], patches_per_item=3, train_split=1.0)
    assert len(ds) == 6 and ds[5]["data"].shape == (3, 12, 8)
    val = create_dataset("image", "all", root=tmp_path, patch_size=[12, 8])
    assert torch.equal(val[0]["data"], val[0]["data"])  # centre patch: deterministic
    whole = create_dataset("image", "all", root=tmp_path, patch_size=[12, 8], pad_multiple=(16, 16))
    shapes = sorted(tuple(whole[i]["data"].shape) for i in range(2))
    assert shapes == [(3, 32, 32), (3, 48, 64)]  # whole images padded to the multiple
    x = whole[[i for i in range(2) if whole[i]["data"].shape[1] == 32][0]]["data"]
    assert torch.equal(x[:, 30:, :], x[:, 29:30, :].expand(-1, 2, -1))  # the last real row repeated


def test_augmentation_changes_train_not_val(tmp_path):
    write_png(tmp_path / "a.png", h=32, w=32)
    tr = create_dataset("image", "train", root=tmp_path, augment=True, train_split=1.0)
    torch.manual_seed(0)
    outs = [tr[0]["data"] for _ in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    assert all(o.shape == (3, 32, 32) and float(o.abs().max()) <= 1 for o in outs)
    al = create_dataset("image", "all", root=tmp_path, augment=True)
    assert torch.equal(al[0]["data"], al[0]["data"])


def test_corrupt_file_is_skipped_with_warning(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"{i}.png", seed=i)
    bad = corrupt(tmp_path / "broken.png")
    with pytest.warns(RuntimeWarning, match="broken.png"):
        ds = create_dataset("image", "all", root=tmp_path)
    assert len(ds) == 3 and [s[0] for s in ds.skipped] == [str(bad)]
    assert "skipped" in ds.summary()


def test_file_failing_at_load_time_is_replaced(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"{i}.png", seed=i)
    ds = create_dataset("image", "all", root=tmp_path)
    # truncate a file after indexing: the header was fine, the pixels are not
    data = ds.files[1].read_bytes()
    ds.files[1].write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match=ds.files[1].name):
        item = ds[1]
    assert item["index"] == 1 and item["data"].shape == (3, 20, 24)
    assert torch.equal(item["data"], ds[2]["data"])  # replaced by the next item
    assert len(ds.skipped) == 1


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no files with extensions.*\.png.*empty"):
        create_dataset("image", "train", root=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing"):
        create_dataset("image", "train", root=tmp_path / "missing")
    corrupt(tmp_path / "bad" / "x.png")
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="no usable image files"):
        create_dataset("image", "all", root=tmp_path / "bad")
    with pytest.raises(ValueError, match="data.root"):
        create_dataset("image", "train")


def test_bad_options(tmp_path):
    write_png(tmp_path / "a.png")
    with pytest.raises(ValueError, match="channels"):
        ImageFolder(tmp_path, channels=2)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        create_dataset("image", "train", root=tmp_path, colour=True)
    with pytest.raises(ValueError, match="data.kind"):
        create_dataset("pictures", "train", root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        create_dataset("image", "test", root=tmp_path)


def test_dataloader_batches(tmp_path):
    for i in range(5):
        write_png(tmp_path / f"{i}.png", seed=i)
    ds = create_dataset("image", "all", root=tmp_path)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["data"].shape == (4, 3, 20, 24) and batch["index"].tolist() == [0, 1, 2, 3]


def test_large_jpeg_decoded_at_reduced_scale_gives_same_item_size(tmp_path):
    write_png(tmp_path / "big.jpg", h=400, w=600)
    ds = create_dataset("image", "all", root=tmp_path, resolution=[32, 32])
    x = ds[0]["data"]
    ref = fit_and_crop(torch.from_numpy(rgb(400, 600)).permute(2, 0, 1).float() / 127.5 - 1, (32, 32), "center", False)
    assert x.shape == (3, 32, 32) and (x - ref).abs().mean() < 0.05  # JPEG + reduced-scale decode: close
    from ndvq.data.image import read_image

    small, _ = read_image(tmp_path / "big.jpg", min_size=(32, 32))
    assert small.shape[0] < 400 and small.shape[0] >= 32  # the draft mode decoded fewer pixels


def test_exif_orientation_is_read_upright_and_the_header_agrees(tmp_path):
    """A phone photograph stored sideways with EXIF orientation 6 is read as viewers show it (turned upright:
    height and width swap, in the header too) and written back upright; it was read as stored."""
    from PIL import Image

    from ndvq.data import write_item

    raw = np.zeros((40, 64, 3), np.uint8)
    raw[:, :8] = 255  # a white band along the stored left edge: the top edge once turned upright (orientation 6)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(raw).save(tmp_path / "side.jpg", exif=exif, quality=95)
    ds = create_dataset("image", "all", root=tmp_path, pad_multiple=[1, 1])
    x, info = ds[0]["data"], ds.item_info(0)
    assert ds.sizes == [(64, 40)] and x.shape == (3, 64, 40)
    assert x[:, :8].mean() > 0.9 and x[:, 16:].mean() < -0.9  # the band is at the top
    [out] = write_item("image", x, tmp_path / "out" / "side", info)
    assert Image.open(out).size == (40, 64)  # (W, H): upright
