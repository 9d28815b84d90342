"""``ndvq sample``: files of the modality's format and the training item's shape, seeds, prompts, bad input."""

from __future__ import annotations

import pytest
import torch
from priorkit import PRIOR, make_run

from ndvq.cli import main
from ndvq.errors import CheckpointError, ConfigError
from ndvq.prior.sample import sample
from ndvq.prior.train import train_prior


@pytest.fixture(scope="module")
def image_prior(image_run):
    train_prior(image_run, overrides=[*PRIOR, "max_steps=2"], overwrite=True)
    return image_run


@pytest.fixture(scope="module")
def audio_prior(audio_run):
    train_prior(audio_run, overrides=[*PRIOR, "max_steps=2"], overwrite=True)
    return audio_run


def test_image_samples_are_pngs_of_the_training_item_shape(image_prior, tmp_path, capsys):
    from PIL import Image

    assert main(["sample", str(image_prior), "--n", "3", "--out", str(tmp_path / "s"), "--seed", "4",
                 "--top-k", "8", "--temperature", "0.9"]) == 0
    files = sorted((tmp_path / "s").iterdir())
    assert [p.name for p in files] == ["sample_000.png", "sample_001.png", "sample_002.png"]
    assert all(Image.open(p).size == (16, 16) and Image.open(p).mode == "RGB" for p in files)


def test_same_seed_same_samples(image_prior, tmp_path):
    a = sample(image_prior, 4, tmp_path / "a", seed=7)
    b = sample(image_prior, 4, tmp_path / "b", seed=7)
    c = sample(image_prior, 4, tmp_path / "c", seed=8)
    assert torch.equal(a.grids[0], b.grids[0]) and not torch.equal(a.grids[0], c.grids[0])
    assert all(pa.read_bytes() == pb.read_bytes() for pa, pb in zip(a.files, b.files))
    nocache = sample(image_prior, 4, tmp_path / "d", seed=7, cache=False)
    assert torch.equal(a.grids[0], nocache.grids[0])


def test_audio_samples_are_wavs(audio_prior, tmp_path):
    import soundfile as sf

    res = sample(audio_prior, 2, tmp_path / "s", seed=1)
    assert [p.suffix for p in res.files] == [".wav", ".wav"]
    info = sf.info(str(res.files[0]))
    assert info.samplerate == 8000 and info.channels == 1 and info.frames > 0
    assert res.grids[0].shape[0] == 2


def test_prompt_keeps_the_beginning(audio_prior, tmp_path):
    prompt = next((audio_prior.parent / "data" / "test").glob("*.wav"))
    res = sample(audio_prior, 3, tmp_path / "s", seed=2, prompt=prompt)
    length = res.grids[0].shape[1]
    half = (length + 1) // 2
    assert res.prompt_mask[0].sum() == half
    kept = res.grids[0][:, :half]
    assert torch.equal(kept, res.prompt_grids[0][:half].expand_as(kept))
    assert main(["sample", str(audio_prior), "--n", "1", "--out", str(tmp_path / "c"), "--prompt", str(prompt)]) == 0
    assert len(list((tmp_path / "c").glob("*.wav"))) == 1


def test_bad_input(image_prior, audio_prior, tmp_path, capsys):
    with pytest.raises(ConfigError, match="video, audio or series"):
        sample(image_prior, 1, tmp_path / "x", prompt=__file__)
    with pytest.raises(CheckpointError, match="no trained prior"):
        sample(make_run(tmp_path / "bare"), 1, tmp_path / "y")
    capsys.readouterr()
    cases = [
        (["sample", str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "does not exist"),
        (["sample", str(image_prior), "--out", str(tmp_path / "o"), "--temperature", "0"], "temperature > 0"),
        (["sample", str(audio_prior), "--out", str(tmp_path / "o"), "--prompt", str(tmp_path / "no.wav")],
         "does not exist"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("kind,suffix", [("volume", ".gz"), ("series", ".csv")])
def test_volume_and_series_samples(kind, suffix, tmp_path):
    run = make_run(tmp_path, kind)
    train_prior(run, overrides=[*PRIOR, "max_steps=1"])
    prompt = next((run.parent / "data" / "test").iterdir()) if kind == "series" else None
    res = sample(run, 2, tmp_path / "s", prompt=prompt)
    assert [p.suffix for p in res.files] == [suffix, suffix] and all(p.stat().st_size > 0 for p in res.files)


def test_samples_do_not_copy_one_file_s_missing_values(tmp_path):
    """The writers' info for generated samples comes from a training item; that item's missing-value runs are
    its own and must not put NaN into every sample."""
    import numpy as np

    from ndvq.data import create_dataset
    from ndvq.prior.sample import _item_info

    a = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    a[10:20, 0] = np.nan
    np.save(tmp_path / "a.npy", a)
    ds = create_dataset("series", "all", root=tmp_path, segment_length=50)
    assert ds.item_info(0)["missing"] == [[0, 10, 10]] and "missing" not in _item_info(ds)
