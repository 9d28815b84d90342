"""Audio folders: formats, resampling, windows, mono/multichannel, normalisation, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datafiles import corrupt, write_audio

from ndvq.data import create_dataset


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg"])
def test_formats_windows_and_range(tmp_path, ext):
    write_audio(tmp_path / f"a.{ext}", seconds=1.0, rate=8000, amp=0.3)
    ds = create_dataset("audio", "all", root=tmp_path, segment_length=1000, hop_length=500)
    assert len(ds) == (8000 - 1000) // 500 + 1 and ds.n_dims == 1 and ds.channels == 1
    x = ds[3]["data"]
    assert x.shape == (1, 1000)
    assert float(x.abs().max()) == pytest.approx(1.0, abs=1e-4)  # peak-normalised
    assert ds.item_info(3) == {"path": str(tmp_path / f"a.{ext}"), "sample_rate": 8000, "start": 1500,
                               "source_rate": 8000, "item_shape": [1000], "frames": 8000}


def test_resampling_keeps_the_tone(tmp_path):
    write_audio(tmp_path / "a.wav", seconds=1.0, rate=8000)
    ds = create_dataset("audio", "all", root=tmp_path, sample_rate=16000, segment_length=4000, normalize="none")
    assert len(ds) == 4 and ds.item_info(0)["sample_rate"] == 16000
    x = ds[1]["data"][0].numpy()
    spec = np.abs(np.fft.rfft(x))
    freq = np.fft.rfftfreq(x.size, 1 / 16000)[spec.argmax()]
    assert freq == pytest.approx(440, abs=5)
    assert float(np.abs(x).max()) == pytest.approx(0.5, abs=0.02)  # amplitude kept


def test_mono_and_multichannel(tmp_path):
    write_audio(tmp_path / "st.wav", seconds=0.5, rate=8000, channels=2)
    mono = create_dataset("audio", "all", root=tmp_path, segment_length=1000)
    assert mono[0]["data"].shape == (1, 1000)
    stereo = create_dataset("audio", "all", root=tmp_path, segment_length=1000, mono=False)
    assert stereo.channels == 2 and stereo[0]["data"].shape == (2, 1000)


def test_rms_normalisation_and_short_file(tmp_path):
    write_audio(tmp_path / "a.wav", seconds=0.1, rate=8000, amp=0.01)
    ds = create_dataset("audio", "all", root=tmp_path, segment_length=400, normalize="rms")
    rms = float(ds[0]["data"].pow(2).mean().sqrt())
    assert rms == pytest.approx(0.1, rel=0.02)
    short = create_dataset("audio", "all", root=tmp_path, segment_length=2000)
    assert len(short) == 1 and torch.all(short[0]["data"][:, 800:] == 0)  # zero-padded


def test_the_suggested_window_is_the_largest_that_keeps_the_padding_below_the_warning(tmp_path):
    """A short clip beside a longer file: the suggestion is the largest window whose padding is within the
    start summary's warning threshold, never the window in effect (it used to read 'try
    data.segment_length=16384' at segment_length 16384)."""
    from ndvq.data.common import PADDING_WARN_SHARE, window_padding

    write_audio(tmp_path / "short.wav", seconds=0.3, rate=8000)  # 2400 samples
    write_audio(tmp_path / "long.wav", seconds=2.3, rate=8000)  # 18400 samples
    ds = create_dataset("audio", "all", root=tmp_path, segment_length=16384)
    assert ds.padding_share() > PADDING_WARN_SHARE and ds.suggested_fix == "data.segment_length=8192"
    fitted = create_dataset("audio", "all", root=tmp_path, segment_length=8192)
    assert fitted.padding_share() == pytest.approx(window_padding([2400, 18400], 8192, 8192))
    assert fitted.padding_share() <= PADDING_WARN_SHARE < window_padding([2400, 18400], 16384, 16384)
    for k in range(3):  # mostly long files: the window in effect already keeps the padding low
        write_audio(tmp_path / f"longer{k}.wav", seconds=2.5, rate=8000)
    ds = create_dataset("audio", "all", root=tmp_path, segment_length=16384)
    assert ds.padding_share() <= PADDING_WARN_SHARE and ds.suggested_fix is None


def test_pad_multiple_gives_whole_files(tmp_path):
    write_audio(tmp_path / "a.wav", seconds=0.25, rate=8000)  # 2000 samples
    train = create_dataset("audio", "train", root=tmp_path, segment_length=768, train_split=1.0)
    whole = create_dataset("audio", "all", root=tmp_path, segment_length=768, pad_multiple=(256,))
    assert len(train) == 2 and len(whole) == 1
    item = whole[0]
    assert item["data"].shape == (1, 2048) and item["valid"].tolist() == [2000]
    assert torch.all(item["data"][:, 2000:] == item["data"][:, 1999:2000])  # the last sample repeated


def test_corrupt_audio_skipped_and_empty_error(tmp_path):
    write_audio(tmp_path / "a.wav")
    corrupt(tmp_path / "b.wav")
    with pytest.warns(RuntimeWarning, match="b.wav"):
        ds = create_dataset("audio", "all", root=tmp_path, segment_length=1000)
    assert len(ds.files) == 1 and ds.skipped[0][0].endswith("b.wav")
    (tmp_path / "e").mkdir()
    with pytest.raises(ValueError, match=r"\.wav.*\.flac"):
        create_dataset("audio", "train", root=tmp_path / "e")


def test_every_split_runs_at_the_whole_folder_s_majority_rate(tmp_path):
    """Train files mostly at 8000 Hz, the val file at 16000 Hz: validation runs at the rate training does
    (each split used to pick its own majority, so this val split ran at 16000 Hz)."""
    for i in range(3):
        write_audio(tmp_path / "train" / f"a{i}.wav", seconds=0.5, rate=8000)
    write_audio(tmp_path / "train" / "b.wav", seconds=0.5, rate=16000)
    write_audio(tmp_path / "test" / "c.wav", seconds=0.5, rate=16000)
    splits = {s: create_dataset("audio", s, root=tmp_path, segment_length=1000) for s in ("train", "val", "all")}
    assert {s: ds.sample_rate for s, ds in splits.items()} == {"train": 8000, "val": 8000, "all": 8000}
    write_audio(tmp_path / "test" / "d.wav", seconds=0.5, rate=16000)  # a tie: the higher rate, for every split
    assert {create_dataset("audio", s, root=tmp_path, segment_length=1000).sample_rate
            for s in ("train", "val", "all")} == {16000}


def test_every_split_keeps_the_whole_folder_s_majority_channel_count(tmp_path):
    """mono=False: train files mostly stereo, the val file mono. The val split skips it (the folder's majority is
    stereo) rather than running with 1 channel; the skip names the file and the count."""
    for i in range(3):
        write_audio(tmp_path / "train" / f"s{i}.wav", seconds=0.5, rate=8000, channels=2)
    write_audio(tmp_path / "train" / "m.wav", seconds=0.5, rate=8000, channels=1)
    write_audio(tmp_path / "test" / "v.wav", seconds=0.5, rate=8000, channels=1)
    write_audio(tmp_path / "test" / "w.wav", seconds=0.5, rate=8000, channels=2)
    with pytest.warns(RuntimeWarning, match="m.wav"):
        train = create_dataset("audio", "train", root=tmp_path, segment_length=1000, mono=False)
    with pytest.warns(RuntimeWarning, match=r"v\.wav.*1 channel\(s\), the majority 2"):
        val = create_dataset("audio", "val", root=tmp_path, segment_length=1000, mono=False)
    assert (train.channels, val.channels) == (2, 2) and [f.name for f in val.files] == ["w.wav"]


def test_short_val_files_suggest_no_window_and_the_warning_names_no_change(tmp_path):
    """Long train files, one short val clip: the val split suggests no window (the train split's to choose), and
    the start warning offers no fix when the train split's would be the window in effect (it read 'try
    data.segment_length=2048' at segment_length 2048)."""
    from types import SimpleNamespace

    from ndvq.config import validate_config
    from ndvq.run.progress import padding_fix, start_warnings

    for i in range(3):
        write_audio(tmp_path / "train" / f"a{i}.wav", seconds=1.0, rate=8000)
    write_audio(tmp_path / "test" / "short.wav", seconds=0.1, rate=8000)  # 800 samples
    splits = {s: create_dataset("audio", s, root=tmp_path, segment_length=2048) for s in ("train", "val")}
    assert splits["val"].suggested_fix is None and "1 of 1 val file(s) are shorter" in splits["val"].notes[-1]
    cfg = validate_config({"data": {"kind": "audio", "root": str(tmp_path), "segment_length": 2048}})
    assert padding_fix(splits["train"]) == "data.segment_length=2048" and padding_fix(splits["train"], cfg.data) is None
    session = SimpleNamespace(cfg=cfg, total=100, intervals=(10, 10, 10))
    [line] = start_warnings(session, splits)
    assert "val window is padding" in line and "try" not in line and "is kept" in line
