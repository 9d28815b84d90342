"""Video folders: clip counting from metadata, frame selection, the clip-index cache, bad files."""

from __future__ import annotations

import os

import pytest
import torch
from datafiles import corrupt, write_video

import ndvq.data.video as video
from ndvq.data import create_dataset


@pytest.fixture
def videos(tmp_path):
    write_video(tmp_path / "v" / "a.mp4", n_frames=20)
    write_video(tmp_path / "v" / "b.mkv", n_frames=20)
    return tmp_path / "v"


def test_clips_shapes_and_frames(videos):
    ds = create_dataset("video", "all", root=videos, sequence_length=4, frame_stride=2, clip_stride=3)
    # span = (4 - 1) * 2 + 1 = 7 frames; starts 0, 3, 6, 9, 12 per 20-frame video
    assert len(ds) == 10 and ds.n_dims == 3 and ds.channels == 3 and ds.modality == "video"
    i = [j for j in range(len(ds)) if ds.item_info(j)["start_frame"] == 6][0]
    x = ds[i]["data"]
    assert x.shape == (3, 4, 16, 16) and float(x.min()) >= -1 and float(x.max()) <= 1
    means = (x.mean(dim=(0, 2, 3)) + 1) * 127.5  # frame t was written with brightness 10 t + 5
    assert torch.allclose(means, torch.tensor([65.0, 85.0, 105.0, 125.0]), atol=4)
    info = ds.item_info(i)
    assert info["fps"] == pytest.approx(5.0) and info["frame_stride"] == 2


def test_default_clip_stride_resolution_and_gray(videos):
    ds = create_dataset("video", "train", root=videos, sequence_length=8, resolution=[8, 8], train_split=1.0)
    assert len(ds) == 4  # non-overlapping 8-frame clips: starts 0, 8 per video
    assert ds[0]["data"].shape == (3, 8, 8, 8)
    g = create_dataset("video", "all", root=videos, sequence_length=8, channels=1, pad_multiple=(16, 16, 16))
    assert len(g) == 2 and g[0]["data"].shape == (1, 32, 16, 16)  # whole videos: 20 frames padded to 32
    assert g[0]["valid"].tolist() == [20, 16, 16]


def test_short_video_repeats_last_frame(tmp_path):
    write_video(tmp_path / "s.mp4", n_frames=3)
    ds = create_dataset("video", "all", root=tmp_path, sequence_length=5)
    assert len(ds) == 1
    x = ds[0]["data"]
    assert x.shape == (3, 5, 16, 16) and torch.allclose(x[:, 2], x[:, 4])
    assert ds[0]["valid"].tolist() == [3, 16, 16]  # the repeated frames are not data


def test_clip_index_cache_hit_and_invalidation(videos, monkeypatch):
    ds = create_dataset("video", "all", root=videos, sequence_length=4)
    assert (ds.index.hits, ds.index.misses) == (0, 2)
    assert not (videos / ".ndvq_clip_index.json").exists()  # never written into the data folder
    assert ds.index.location.is_file() and os.environ["NDVQ_CACHE"] in str(ds.index.location)

    def no_probe(path):  # a cache hit must not open the video
        raise AssertionError(f"probed {path}")

    with monkeypatch.context() as m:  # (undo() would also drop the private NDVQ_CACHE)
        m.setattr(video, "probe_video", no_probe)
        ds2 = create_dataset("video", "all", root=videos, sequence_length=4)
    assert (ds2.index.hits, ds2.index.misses) == (2, 0) and len(ds2) == len(ds)
    write_video(videos / "a.mp4", n_frames=40)  # the file changes: its entry is stale
    st = (videos / "a.mp4").stat()
    os.utime(videos / "a.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ds3 = create_dataset("video", "all", root=videos, sequence_length=4)
    assert (ds3.index.hits, ds3.index.misses) == (1, 1)
    assert len(ds3) == 10 + 5


def test_clip_index_lives_in_cache_dir(videos):
    loc = video.ClipIndex.for_root(videos)
    assert loc.parent.name == "clip_index" and os.environ["NDVQ_CACHE"] in str(loc)
    ds = create_dataset("video", "all", root=videos, sequence_length=4)
    assert ds.index.location == loc and loc.is_file()


def test_corrupt_video_is_skipped(videos):
    corrupt(videos / "bad.avi")
    with pytest.warns(RuntimeWarning, match="bad.avi"):
        ds = create_dataset("video", "all", root=videos, sequence_length=4)
    assert len(ds.files) == 2 and len(ds.skipped) == 1


def test_empty_video_folder(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match=r"\.mp4"):
        create_dataset("video", "train", root=tmp_path / "x")
