"""The parts of issue 13 that live in the CLI, the config and the training loop: overrides at any
position, a medical config whose data folder comes from an override, ``train_split=1.0`` (no
validation), ``model.in_channels=auto``, padding excluded from the training loss, warnings about the
schedule at start and a first progress line after the first step."""

from __future__ import annotations

import json

import pytest
import realfiles as rf
import yaml

from ndvq.cli import main

TINY = ["model.videogpt.n_hiddens=16", "model.videogpt.num_res_blocks=1", "model.embedding_dim=8",
        "model.n_codes=16", "model.videogpt.n_head=0", "model.videogpt.norm=group",
        "model.videogpt.norm_num_groups=8", "train.max_steps=2", "train.batch_size=2", "train.log_interval=1",
        "train.val_batches=1", "train.num_workers=0", "train.warmup_steps=0", "train.accelerator=cpu",
        "train.doctor_warnings=false"]
SERIES = ["data.kind=series", "model.n_dims=1", "model.in_channels=auto", "model.videogpt.downsample=[4]",
          "data.segment_length=64"]


def _run(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def series_run(tmp_path, capsys):
    rf.mixed_csvs(tmp_path / "s", n5=4)
    code, out, err = _run(["train", *TINY, *SERIES, f"data.root={tmp_path / 's'}", f"run.root={tmp_path}",
                           "run.name=r"], capsys)
    assert code == 0, err
    return tmp_path / "r", out, err


def test_in_channels_auto_and_start_summary(series_run):
    run, out, err = series_run
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["in_channels"] == 5  # from the data
    assert "train.val_interval=" in out and "> the run's 2 steps" in out  # intervals larger than the run
    assert "step 1/2 done in" in err  # the first progress line comes after the first step


def test_overrides_at_any_position(series_run, tmp_path, capsys):
    run, _, _ = series_run
    code, out, err = _run(["eval", run, "--data", tmp_path / "s", "data.hop_length=32", "--out",
                           tmp_path / "e.json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "e.json").read_text())["n_items"] == 4
    code, _, err = _run(["encode", run, "data.hop_length=32", "--out", tmp_path / "c.npz"], capsys)
    assert code == 0, err
    code, _, err = _run(["decode", run, tmp_path / "c.npz", "data.hop_length=32", "--out", tmp_path / "d"], capsys)
    assert code == 2 and "takes no key=value overrides" in err


def test_train_split_one_means_no_validation(tmp_path, capsys):
    rf.mixed_csvs(tmp_path / "s", n5=4)
    code, out, err = _run(["train", *TINY, *SERIES, f"data.root={tmp_path / 's'}", "data.train_split=1.0",
                           f"run.root={tmp_path}", "run.name=r", "train.val_interval=1"], capsys)
    assert code == 0, err
    recs = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert recs and not any(r["split"] == "val" for r in recs)


def test_padding_is_excluded_from_the_training_loss(tmp_path):
    import torch

    from ndvq.build import build_objective
    from ndvq.config import load_config
    from ndvq.data.common import valid_mask

    obj = build_objective(load_config(None, ["model.n_dims=1", "model.in_channels=1", "model.videogpt.downsample=[4]"]))
    x = torch.zeros(2, 1, 8)
    batch = {"data": x, "valid": torch.tensor([[4], [8]])}

    class Out:
        reconstruction = x.clone()
        aux_loss = torch.zeros(())
        kl_loss = None

        def scalars(self):
            return {}

    out = Out()
    out.reconstruction[0, 0, 4:] = 5.0  # wrong only inside the padding
    assert float(obj(x, out, 0, mask=valid_mask(batch)).loss) == 0.0
    assert float(obj(x, out, 0).loss) > 0


def test_medical_data_root_override_replaces_a_missing_data_base_dir(tmp_path):
    from ndvq.config import load_config

    rf.medical_tiffs(tmp_path / "dental", n=2, size=24)
    cfg = {"data_base_dir": "/nonexistent", "run_dir": str(tmp_path / "runs"), "spatial_dims": 2,
           "autoencoder_def": {"in_channels": 1, "out_channels": 1, "channels": [8, 16], "norm_num_groups": 4,
                               "attention_levels": [False, False]},
           "autoencoder_train": {"patch_size": [16, 16]}}
    path = tmp_path / "vae_config.json"
    path.write_text(json.dumps(cfg))
    loaded = load_config(path, [f"data.root={tmp_path / 'dental'}"])
    assert loaded.data.root == str(tmp_path / "dental") or str(loaded.data.root) == str(tmp_path / "dental")


def test_default_window_shrinks_to_fit_short_clips_but_a_set_one_is_kept(tmp_path, capsys):
    rf.speech_clips(tmp_path / "c", n=12, seconds=(0.3, 0.7))  # 2400-5600 samples at 8 kHz
    audio = ["data.kind=audio", "model.n_dims=1", "model.in_channels=1", "model.videogpt.downsample=[16]",
             f"data.root={tmp_path / 'c'}", f"run.root={tmp_path}"]
    code, out, err = _run(["train", *TINY, *audio, "run.name=auto"], capsys)
    assert code == 0, err
    data = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())["data"]
    assert data["segment_length"] == 4096 and data["hop_length"] is None  # recorded: eval/resume use it
    assert "data.segment_length 16384 -> 4096" in out
    pad = next(line for line in out.splitlines() if "padding:" in line)
    assert int(pad.split("padding: ")[1].split("%")[0]) < 25  # was ~75% of each 16384 window
    code, out, err = _run(["train", *TINY, *audio, "data.segment_length=16384", "run.name=kept"], capsys)
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "kept" / "config.yaml").read_text())["data"]["segment_length"] == 16384
    assert "-> 4096" not in out and "is padding" in out and "try data.segment_length=4096" in out


def test_medical_overrides_all_apply_before_the_path_check(tmp_path):
    from ndvq.config import load_config
    from ndvq.errors import ConfigError

    (tmp_path / "d" / "own").mkdir(parents=True)
    cfg = {"data_base_dir": str(tmp_path / "d"), "data_source": "both", "run_dir": str(tmp_path / "runs"),
           "val_dir": "/nonexistent/val", "spatial_dims": 2,
           "autoencoder_def": {"in_channels": 1, "out_channels": 1, "channels": [8, 16], "norm_num_groups": 4,
                               "attention_levels": [False, False]},
           "autoencoder_train": {"patch_size": [16, 16]}}
    path = tmp_path / "vae_config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="'both' needs the subfolder"):
        load_config(path)
    loaded = load_config(path, ["data.subfolders=[own]", "data.val_dir=null"])  # any key, not only the paths
    assert loaded.data.subfolders == ["own"] and loaded.data.val_dir is None
    with pytest.raises(ConfigError, match="val_dir .* is not an existing folder"):
        load_config(path, ["data.subfolders=[own]"])
