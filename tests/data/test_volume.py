"""Volumes: NIfTI / NPY, patches, padded whole volumes, intensity options, affine through write_item."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from datafiles import corrupt, write_nifti

from ndvq.data import create_dataset, write_item


@pytest.fixture
def vols(tmp_path):
    d = tmp_path / "vols"
    write_nifti(d / "a.nii.gz", shape=(12, 10, 8), seed=0)
    write_nifti(d / "b.nii", shape=(9, 11, 13), seed=1)
    np.save(d / "c.npy", np.random.default_rng(2).normal(100, 20, (10, 10, 10)).astype(np.float32))
    return d


def test_random_patches_for_training(vols):
    ds = create_dataset("volume", "train", root=vols, patch_size=[8, 8, 8], patches_per_item=2, train_split=1.0)
    assert len(ds) == 6 and ds.n_dims == 3 and ds.channels == 1 and ds.modality == "volume"
    x = torch.stack([ds[i]["data"] for i in range(len(ds))])
    assert x.shape == (6, 1, 8, 8, 8) and float(x.min()) >= -1 and float(x.max()) <= 1
    torch.manual_seed(0)
    a = ds[0]["data"]
    torch.manual_seed(1)
    assert not torch.equal(a, ds[0]["data"])  # a new random patch


def test_val_centre_patch_and_whole_padded(vols):
    val = create_dataset("volume", "all", root=vols, patch_size=[8, 8, 8])
    assert torch.equal(val[1]["data"], val[1]["data"]) and val[1]["data"].shape == (1, 8, 8, 8)
    whole = create_dataset("volume", "all", root=vols, patch_size=[8, 8, 8], pad_multiple=(4, 4, 4))
    shapes = {tuple(whole[i]["data"].shape) for i in range(3)}
    assert shapes == {(1, 12, 12, 8), (1, 12, 12, 16), (1, 12, 12, 12)}
    for i in range(3):  # each axis's padding repeats the last real slice (padding after the real extent)
        x, valid = whole[i]["data"], whole[i]["valid"].tolist()
        for axis, v in enumerate(valid):
            pad = x.narrow(axis + 1, v, x.shape[axis + 1] - v)
            assert torch.equal(pad, x.narrow(axis + 1, v - 1, 1).expand_as(pad))
    with pytest.raises(ValueError, match="different shapes"):
        create_dataset("volume", "all", root=vols)


def test_intensity_options(tmp_path):
    v = np.linspace(-2000, 2000, 10 * 10 * 10, dtype=np.float32).reshape(10, 10, 10)
    nib.save(nib.Nifti1Image(v, np.eye(4)), str(tmp_path / "ct.nii.gz"))
    ct = create_dataset("volume", "all", root=tmp_path, intensity="ct", ct_window=(-1000, 1000))[0]["data"]
    ref = torch.from_numpy(np.clip(v / 1000, -1, 1))[None]
    assert torch.allclose(ct, ref, atol=1e-5)
    pc = create_dataset("volume", "all", root=tmp_path, intensity="percentile", percentiles=(10, 90))[0]["data"]
    assert float(pc.min()) == -1 and float(pc.max()) == 1
    assert (pc == -1).float().mean() == pytest.approx(0.1, abs=0.01)
    z = create_dataset("volume", "all", root=tmp_path, intensity="zscore")[0]["data"]
    fg = v[v > v.min()]
    assert float(z.flatten()[500]) == pytest.approx((v.flatten()[500] - fg.mean()) / fg.std() / 5, abs=1e-4)
    with pytest.raises(ValueError, match="intensity"):
        create_dataset("volume", "all", root=tmp_path, intensity="minmax")


def test_affine_and_intensities_preserved_through_write_item(tmp_path):
    aff = np.array([[0.8, 0, 0, -30.0], [0, 0.9, 0, 12.0], [0, 0, 2.5, 5.0], [0, 0, 0, 1]])
    write_nifti(tmp_path / "in" / "scan.nii.gz", shape=(16, 12, 8), affine=aff)
    ds = create_dataset("volume", "all", root=tmp_path / "in", pad_multiple=(8, 8, 8), intensity="ct",
                        ct_window=(0, 200))
    x = ds[0]["data"]
    assert x.shape == (1, 16, 16, 8)
    info = ds.item_info(0)
    assert np.allclose(info["affine"], aff)
    out = write_item("volume", x, tmp_path / "out" / "scan", info)  # padding removed via item_shape
    assert out[0].name == "scan.nii.gz"
    img = nib.load(str(out[0]))
    assert np.allclose(img.affine, aff) and img.shape == (16, 12, 8)
    orig = nib.load(str(tmp_path / "in" / "scan.nii.gz")).get_fdata()
    assert np.allclose(img.get_fdata(), np.clip(orig, 0, 200), atol=1e-3)  # original units restored


def test_centre_patch_affine_is_shifted(tmp_path):
    write_nifti(tmp_path / "a.nii", shape=(12, 12, 12), affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    ds = create_dataset("volume", "all", root=tmp_path, patch_size=[8, 8, 8])
    info = ds.item_info(0)
    assert info["offset"] == [2, 2, 2] and np.allclose(info["affine"][:3, 3], [4, 4, 4])


def test_multichannel_nifti_and_npy(tmp_path):
    nib.save(nib.Nifti1Image(np.random.rand(6, 6, 6, 2).astype(np.float32), np.eye(4)), str(tmp_path / "m.nii.gz"))
    ds = create_dataset("volume", "all", root=tmp_path)
    assert ds.channels == 2 and ds[0]["data"].shape == (2, 6, 6, 6)
    d = tmp_path / "n"
    d.mkdir()
    np.save(d / "x.npy", np.random.rand(3, 5, 6, 7).astype(np.float32))
    ds = create_dataset("volume", "all", root=d)
    assert ds.channels == 3 and ds[0]["data"].shape == (3, 5, 6, 7)


def test_corrupt_volume_skipped(vols):
    corrupt(vols / "bad.nii.gz")
    with pytest.warns(RuntimeWarning, match="bad.nii.gz"):
        ds = create_dataset("volume", "all", root=vols, patch_size=[4, 4, 4])
    assert len(ds) == 3 and len(ds.skipped) == 1


def test_compressed_volumes_are_cached_within_budget(vols):
    ds = create_dataset("volume", "all", root=vols, patch_size=[8, 8, 8])
    gz = [i for i, f in enumerate(ds.files) if f.name.endswith(".gz")][0]
    first = ds[gz]["data"]
    assert list(ds._cache) == [gz] and torch.equal(ds[gz]["data"], first)  # served from memory, same values
    tiny = create_dataset("volume", "all", root=vols, patch_size=[8, 8, 8])
    tiny.cache_bytes = 10  # smaller than any volume: nothing kept
    assert torch.equal(tiny[gz]["data"], first) and not tiny._cache


def test_a_tiny_outlier_does_not_shrink_the_suggested_patch_and_channels_follow_the_majority(tmp_path):
    """Three 32^3 volumes and a 4x5x7 one: the suggestion keeps the padding within the warning's share without
    shrinking to the outlier (it read data.patch_size=[4, 4, 4], smaller than a 4x downsampling); the val split
    suggests nothing. A 2-channel volume sorted first no longer sets the count: the majority does."""
    from ndvq.data.common import PADDING_WARN_SHARE, patch_padding

    root = tmp_path / "r"
    for i in range(3):
        write_nifti(root / f"b{i}.nii", shape=(32, 32, 32), seed=i)
    write_nifti(root / "c_tiny.nii", shape=(4, 5, 7))
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 32, 2), np.float32), np.eye(4)), str(root / "a_two.nii"))
    with pytest.warns(RuntimeWarning, match=r"a_two\.nii.*2 channel\(s\), the majority 1"):
        ds = create_dataset("volume", "all", root=root, patch_size=[64, 64, 64])
    assert ds.channels == 1 and len(ds.files) == 4
    shapes = [(32, 32, 32)] * 3 + [(4, 5, 7)]
    assert ds.suggested_fix == "data.patch_size=[32, 32, 32]"
    assert patch_padding(shapes, [32, 32, 32]) <= PADDING_WARN_SHARE < patch_padding(shapes, [64, 32, 32])
    write_nifti(tmp_path / "v" / "small.nii", shape=(8, 8, 8))
    val = create_dataset("volume", "val", root=root, val_dir=tmp_path / "v", patch_size=[64, 64, 64])
    assert val.suggested_fix is None and "val volume(s) are smaller" in val.notes[-1]


def test_volumes_are_written_back_in_their_own_format_and_number_type(tmp_path):
    """An int16 CT-like NIfTI comes back int16 (rounded, in range), a scaled int16 NIfTI float32 (its values are
    not integers), a 3-D NPY as a 3-D NPY of its dtype; they all came back as float32 NIfTI before."""
    rng = np.random.default_rng(0)
    ct = rng.integers(-1000, 2000, (10, 12, 6)).astype(np.int16)
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(ct, np.eye(4)), str(tmp_path / "in" / "ct.nii"))
    scaled = nib.Nifti1Image(ct, np.eye(4))
    scaled.header.set_slope_inter(0.5, 10)
    nib.save(scaled, str(tmp_path / "in" / "scaled.nii.gz"))
    np.save(tmp_path / "in" / "arr.npy", rng.integers(0, 255, (6, 8, 10)).astype(np.uint8))
    ds = create_dataset("volume", "all", root=tmp_path / "in", pad_multiple=(4, 4, 4), intensity="none")
    got = {}
    for i in range(len(ds)):
        info = ds.item_info(i)
        [out] = write_item("volume", ds[i]["data"], tmp_path / "out" / Path(info["path"]).name.split(".")[0], info)
        got[out.name] = np.load(out) if out.suffix == ".npy" else np.asanyarray(nib.load(str(out)).dataobj)
    assert sorted(got) == ["arr.npy", "ct.nii.gz", "scaled.nii.gz"]
    assert got["ct.nii.gz"].dtype == np.int16 and np.array_equal(got["ct.nii.gz"], ct)  # intensity none: exact
    assert got["scaled.nii.gz"].dtype == np.float32 and np.allclose(got["scaled.nii.gz"], ct * 0.5 + 10)
    assert got["arr.npy"].dtype == np.uint8 and got["arr.npy"].shape == (6, 8, 10)
    assert np.array_equal(got["arr.npy"], np.load(tmp_path / "in" / "arr.npy"))
