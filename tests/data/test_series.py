"""Time series: NPY/NPZ/CSV, windows, train-split statistics saved and reloaded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datafiles import corrupt

from ndvq.data import create_dataset


def _make(root, n_files=4, t=300, c=3):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    scales = np.array([1.0, 10.0, 100.0][:c])
    for i in range(n_files):
        np.save(root / f"s{i}.npy", (rng.normal(5, 1, (t, c)) * scales).astype(np.float32))
    return scales


def test_npy_windows_and_standardisation(tmp_path):
    _make(tmp_path / "d")
    ds = create_dataset("series", "train", root=tmp_path / "d", segment_length=64, hop_length=32, train_split=1.0)
    per_file = (300 - 64) // 32 + 1
    assert len(ds) == 4 * per_file and ds.channels == 3 and ds.n_dims == 1 and ds.modality == "series"
    x = torch.stack([ds[i]["data"] for i in range(len(ds))])
    assert x.shape == (len(ds), 3, 64)
    assert torch.allclose(x.mean(dim=(0, 2)), torch.zeros(3), atol=0.1)
    assert torch.allclose(x.std(dim=(0, 2)), torch.ones(3), atol=0.1)
    assert ds.data_range > 4  # PSNR range of z-scored data, not 2


def test_stats_saved_by_train_and_reloaded(tmp_path):
    _make(tmp_path / "d", n_files=5)
    run = tmp_path / "run"
    tr = create_dataset("series", "train", root=tmp_path / "d", segment_length=50, stats_dir=run)
    stats = json.loads((run / "data_stats.json").read_text())
    assert len(stats["mean"]) == 3 and stats["files"] == len(tr.files)
    stats["mean"] = [0.0, 0.0, 0.0]  # a reloaded file wins over recomputation
    (run / "data_stats.json").write_text(json.dumps(stats))
    va = create_dataset("series", "val", root=tmp_path / "d", segment_length=50, stats_dir=run)
    assert va.item_info(0)["mean"] == [0.0, 0.0, 0.0]
    # without the file the val split computes the train split's statistics (not its own)
    va2 = create_dataset("series", "val", root=tmp_path / "d", segment_length=50)
    assert np.allclose(va2.item_info(0)["mean"], tr.item_info(0)["mean"])


def test_csv_with_header_and_timestamp_and_npz(tmp_path):
    rows = ["time,temp,pressure"] + [f"2024-01-01T00:{i:02d},{20 + i % 5},{1000 + i}" for i in range(60)]
    (tmp_path / "a.csv").write_text("\n".join(rows) + "\n")
    np.savez(tmp_path / "b.npz", x=np.ones((40, 2)), y=np.arange(80.0).reshape(40, 2))
    ds = create_dataset("series", "all", root=tmp_path, segment_length=20, standardize=False)
    assert ds.columns == ["temp", "pressure"] and ds.channels == 2
    assert len(ds) == 3 + 2 + 2
    assert torch.allclose(ds[0]["data"][:, 0], torch.tensor([20.0, 1000.0]))
    keys = {ds.item_info(i)["key"] for i in range(len(ds))}
    assert keys == {"", "x", "y"}


def test_nan_becomes_mean_and_short_series_padded(tmp_path):
    a = np.arange(30, dtype=np.float32)[:, None].repeat(2, 1)
    a[5, 1] = np.nan
    np.save(tmp_path / "a.npy", a)
    ds = create_dataset("series", "all", root=tmp_path, segment_length=40)
    x = ds[0]["data"]
    assert x.shape == (2, 40) and torch.isfinite(x).all() and x[1, 5] == 0 and torch.all(x[:, 30:] == 0)


def test_bad_files_skipped_and_channel_mismatch(tmp_path):
    _make(tmp_path, n_files=2)
    np.save(tmp_path / "z_two_channels.npy", np.zeros((100, 2), np.float32))
    corrupt(tmp_path / "bad.npy")
    with pytest.warns(RuntimeWarning) as rec:
        ds = create_dataset("series", "all", root=tmp_path, segment_length=50)
    names = " ".join(str(w.message) for w in rec)
    assert "bad.npy" in names and "z_two_channels.npy" in names
    assert len(ds.files) == 2 and len(ds.skipped) == 2


def test_missing_values_are_left_out_of_the_loss_and_written_back_missing(tmp_path):
    """A CSV with a gap in one column: the item marks the gap (``observed``), the batch mask leaves it out of the
    loss and PSNR (a wrong value there changes nothing), ``item_info`` records it and the written file has NaN
    exactly there; the start note counts it. It used to be read as the mean, counted as data and written back
    as a reconstructed number."""
    from ndvq import metrics as M
    from ndvq.data import write_item
    from ndvq.data.common import valid_mask
    from ndvq.data.series import missing_runs, read_series

    t = np.arange(120, dtype=np.float32)
    a = np.stack([np.sin(t / 7), np.cos(t / 5) * 3 + 10], 1)
    a[40:46, 1] = np.nan
    a[100, 0] = np.nan
    np.savetxt(tmp_path / "g.csv", a, delimiter=",", header="u,v", comments="", fmt="%.6g")
    ds = create_dataset("series", "all", root=tmp_path, segment_length=50, hop_length=50)
    assert any("7 missing value(s) (NaN / inf) in 1 of 1 series" in note for note in ds.notes)
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    mask = valid_mask(batch)
    assert mask.shape == batch["data"].shape and int((~mask).sum()) == 6  # the gap; step 100 is past both windows
    y = batch["data"].clone()
    y[~mask] = 1e3  # wrong only where values are missing
    assert torch.all(M.mse(batch["data"], y, mask) == 0)
    whole = create_dataset("series", "all", root=tmp_path, segment_length=50, pad_multiple=[4])
    item, info = whole[0], whole.item_info(0)
    assert info["missing"] == [[0, 100, 1], [1, 40, 6]] == missing_runs(a)
    assert item["observed"].shape == item["data"].shape  # padded with the data (120 -> 120, a multiple of 4)
    [out] = write_item("series", item["data"][:, :120], tmp_path / "out" / "g", info)
    back = read_series(out)[0][1]
    assert np.array_equal(np.isnan(back), np.isnan(a)) and np.allclose(back[~np.isnan(a)], a[~np.isnan(a)], atol=1e-4)
