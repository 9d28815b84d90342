"""The data layer says what it does: valid extents of padded items (and masks that collate), symlink
loops, train/val never sharing a file, unusable files dropped, single-file position splits,
``train_split=1.0``, the source sample rate kept, small items and channel mismatches warned about."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import write_audio, write_nifti, write_png, write_video

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fidelity"))
import realfiles as rf  # noqa: E402

from ndvq import metrics as M  # noqa: E402
from ndvq.data import create_dataset  # noqa: E402
from ndvq.data.common import code_mask, valid_mask  # noqa: E402


def test_short_clips_carry_their_valid_length_and_collate(tmp_path):
    rf.speech_clips(tmp_path / "c", n=4, seconds=(0.3, 0.7))
    ds = create_dataset("audio", "all", root=tmp_path / "c", segment_length=8192)
    assert ds.sample_rate == 8000 and not any("resampled" in n for n in ds.notes)  # source rate kept
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    lengths = [ds.extent(i)[0][0] for i in range(4)]
    assert batch["valid"].tolist() == [[n] for n in lengths] and all(2400 <= n <= 5600 for n in lengths)
    mask = valid_mask(batch)
    assert mask.shape == (4, 1, 8192) and mask.sum(-1).flatten().tolist() == lengths
    assert torch.all(batch["data"][~mask.expand_as(batch["data"])] == 0)  # padding is zeros, and masked
    share = ds.padding_share()
    assert share == pytest.approx(1 - sum(lengths) / (4 * 8192))
    assert any("shorter than data.segment_length" in n for n in ds.notes)
    # masked metrics: an error in the padding does not count
    y = batch["data"] + (~mask) * 0.5
    assert torch.allclose(M.psnr(batch["data"], y, 2.0, mask), torch.full((4,), 10 * np.log10(4 / 1e-12)))
    assert code_mask(batch["valid"], [4096], [2]).tolist() == [[True, n > 4096] for n in lengths]


def test_resampling_is_stated(tmp_path):
    write_audio(tmp_path / "a.wav", seconds=0.5, rate=8000)
    write_audio(tmp_path / "b.wav", seconds=0.5, rate=8000)
    write_audio(tmp_path / "c.wav", seconds=0.5, rate=16000)
    with pytest.warns(RuntimeWarning, match="resampled"):
        ds = create_dataset("audio", "all", root=tmp_path, segment_length=1024)
    assert ds.sample_rate == 8000 and "1 file(s) at 16000 Hz resampled to 8000 Hz" in ds.notes[0]
    fixed = create_dataset("audio", "all", root=tmp_path, segment_length=1024, sample_rate=16000)
    assert "2 file(s) at 8000 Hz resampled to 16000 Hz" in fixed.notes[0]


def test_symlink_loop_indexes_each_file_once_and_splits_never_share(tmp_path):
    rf.symlink_loop(tmp_path / "imgs", n=3)
    with pytest.warns(RuntimeWarning, match="already indexed"):
        every = create_dataset("image", "all", root=tmp_path / "imgs")
    assert len(every) == 3
    train = create_dataset("image", "train", root=tmp_path / "imgs", train_split=0.67)
    val = create_dataset("image", "val", root=tmp_path / "imgs", train_split=0.67)
    real = lambda ds: {str(Path(f).resolve()) for f in ds.files}  # noqa: E731
    assert len(train) + len(val) == 3 and not real(train) & real(val)


def test_val_dir_inside_root_is_not_shared(tmp_path):
    for i in range(3):
        write_png(tmp_path / "d" / f"a{i}.png", seed=i)
    write_png(tmp_path / "d" / "held" / "v.png")
    from ndvq.errors import DataError

    with pytest.warns(RuntimeWarning, match="also in the train split"), pytest.raises(DataError, match="'val' split"):
        create_dataset("image", "val", root=tmp_path / "d", val_dir=tmp_path / "d" / "held")


def test_unusable_items_are_skipped_in_val_without_a_traceback(tmp_path):
    import tifffile

    good = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    for i in range(3):
        tifffile.imwrite(tmp_path / "t" / f"ok{i}.tif" if (tmp_path / "t").mkdir(exist_ok=True) is None else None,
                         good + i)
    tifffile.imwrite(tmp_path / "t" / "nan.tif", np.full((64, 64), np.nan, np.float32))
    ds = create_dataset("image", "all", root=tmp_path / "t")
    with pytest.warns(RuntimeWarning, match="nan.tif"):
        items = [ds[i] for i in range(len(ds))]
    assert all(torch.isfinite(it["data"]).all() for it in items)
    assert ds.try_item([i for i, f in enumerate(ds.files) if f.name == "nan.tif"][0]) is None
    import nibabel as nib

    (tmp_path / "v").mkdir()
    write_nifti(tmp_path / "v" / "ok.nii.gz")
    nib.save(nib.Nifti1Image(np.full((12, 10, 8), np.nan, np.float32), np.eye(4)), str(tmp_path / "v" / "nan.nii.gz"))
    vol = create_dataset("volume", "all", root=tmp_path / "v")
    with pytest.warns(RuntimeWarning, match="nan.nii.gz"):
        assert all(torch.isfinite(vol[i]["data"]).all() for i in range(len(vol)))


def test_single_recording_is_split_by_time(tmp_path):
    write_audio(tmp_path / "one.wav", seconds=1.0, rate=8000)
    train = create_dataset("audio", "train", root=tmp_path, segment_length=800)
    val = create_dataset("audio", "val", root=tmp_path, segment_length=800)
    assert "split by position" in train.layout
    assert max(s + n for _, s, n in train.windows) <= 7200 and min(s for _, s, _ in val.windows) == 7200
    assert len(train) == 9 and len(val) == 1


def test_single_video_and_volume_are_split_by_position(tmp_path):
    write_video(tmp_path / "v" / "one.mp4", n_frames=20)
    train = create_dataset("video", "train", root=tmp_path / "v", sequence_length=4)
    val = create_dataset("video", "val", root=tmp_path / "v", sequence_length=4)
    assert len(train) == 4 and [c[1] for c in val.clips] == [18] and val[0]["valid"].tolist() == [2, 16, 16]
    write_nifti(tmp_path / "n" / "one.nii.gz", shape=(33, 41, 25), affine=np.eye(4))
    vt = create_dataset("volume", "train", root=tmp_path / "n")
    vv = create_dataset("volume", "val", root=tmp_path / "n")
    assert vt[0]["data"].shape == (1, 33, 41, 22) and vv[0]["data"].shape == (1, 33, 41, 3)
    assert vv.item_info(0)["affine"][2, 3] == pytest.approx(22.0)  # the val part's own position


def test_train_split_one_means_no_validation(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"a{i}.png", seed=i)
    val = create_dataset("image", "val", root=tmp_path, train_split=1.0)
    assert len(val) == 0 and "no validation" in val.layout


def test_small_patches_and_volumes_are_warned_about(tmp_path):
    rf.medical_tiffs(tmp_path / "med", n=2, size=64)
    with pytest.warns(RuntimeWarning, match=r"data.patch_size=\[64, 64\]"):
        ds = create_dataset("image", "train", root=tmp_path / "med", patch_size=[256, 256], train_split=1.0)
    assert ds[0]["valid"].tolist() == [64, 64] and ds.padding_share() == pytest.approx(1 - 1 / 16)
    rf.odd_niftis(tmp_path / "mri", n=1)
    with pytest.warns(RuntimeWarning, match="smaller than data.patch_size"):
        v = create_dataset("volume", "all", root=tmp_path / "mri", patch_size=[64, 64, 64])
    assert v[0]["valid"].tolist() == [33, 41, 25]


def test_series_majority_columns_and_outliers(tmp_path):
    rf.mixed_csvs(tmp_path / "s", n5=3)
    with pytest.warns(RuntimeWarning, match="gdp.csv"):
        ds = create_dataset("series", "all", root=tmp_path / "s", segment_length=64)
    assert ds.channels == 5 and len(ds.files) == 3 and ds.columns == rf._COLUMNS


def test_the_train_split_s_channels_and_rate_hold_for_validation_and_later_reads(tmp_path):
    """An RGB train split with a grayscale val image: the val item reaches the model with 3 channels (it used to
    arrive with 1 and end the run at its first validation); audio pins its rate, so a model trained at
    8000 Hz reads a folder at 16000 Hz resampled to 8000 Hz. Series keep their own rule (statistics)."""
    from ndvq import build
    from ndvq.config import validate_config

    for i in range(3):
        write_png(tmp_path / "img" / "train" / f"c{i}.png", 32, 32, seed=i)
    write_png(tmp_path / "img" / "test" / "g.png", 32, 32, mode="L")
    cfg = validate_config({"data": {"kind": "image", "root": str(tmp_path / "img")}, "model": {"in_channels": "auto"}})
    assert build.build_dataset(cfg, "val").channels == 1  # the val split alone would read it as it is
    pinned = build.resolve_auto(cfg, build.build_dataset(cfg, "train"))
    assert (pinned.model.in_channels, pinned.data.channels) == (3, 3)
    assert build.build_dataset(pinned, "val")[0]["data"].shape == (3, 32, 32)
    explicit = validate_config({"data": {"kind": "image", "root": str(tmp_path / "img"), "channels": 1}})
    assert build.resolve_auto(explicit, build.build_dataset(explicit, "train")).data.channels == 1  # a set value stays

    for i in range(2):
        write_audio(tmp_path / "a8" / f"a{i}.wav", seconds=0.5, rate=8000)
    write_audio(tmp_path / "a16" / "b.wav", seconds=0.5, rate=16000)
    audio = validate_config({"data": {"kind": "audio", "root": str(tmp_path / "a8"), "segment_length": 1000,
                                      "train_split": 1.0}})
    audio = build.resolve_auto(audio, build.build_dataset(audio, "train"))
    assert (audio.data.sample_rate, audio.data.channels) == (8000, 1)
    other = build.build_dataset(audio.model_copy(update={"data": audio.data.model_copy(
        update={"root": str(tmp_path / "a16")})}), "all")
    assert other.sample_rate == 8000 and other.item_info(0)["source_rate"] == 16000

    (tmp_path / "s").mkdir()
    np.save(tmp_path / "s" / "s.npy", np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32))
    series = validate_config({"data": {"kind": "series", "root": str(tmp_path / "s"), "segment_length": 50}})
    assert build.resolve_auto(series, build.build_dataset(series, "train")).data.channels is None


def test_data_root_may_be_one_file(tmp_path):
    """``data.root=recording.wav`` reads that file (split by position, as a folder holding only it); a file of
    another kind is a one-line error naming the extensions. It used to say the root must be a folder."""
    from ndvq.errors import DataError

    wav = write_audio(tmp_path / "rec.wav", seconds=2.0, rate=8000)
    train = create_dataset("audio", "train", root=wav, segment_length=1000)
    val = create_dataset("audio", "val", root=wav, segment_length=1000)
    assert train.files == val.files == [wav] and train.single_file and len(train) == 14 and len(val) == 1
    png = write_png(tmp_path / "one.png", 20, 24)
    assert create_dataset("image", "all", root=png)[0]["data"].shape == (3, 20, 24)
    with pytest.raises(DataError, match=r"rec\.wav' is a file without one of the extensions \['\.png'"):
        create_dataset("image", "all", root=wav)
