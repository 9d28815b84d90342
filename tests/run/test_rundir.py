"""The run directory owner: layout, checkpoint lookup, the one metrics reader, config and model facts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ndvq.errors import CheckpointError, ConfigError, NdvqError
from ndvq.run import rundir

FACTS = {"class": "Autoencoder", "args": {"n_dims": 2, "bottleneck": "lfq", "n_codes": 512},
         "codebook_sizes": [512], "downsample": [4, 4], "code_shapes": [[8, 8]], "n_parameters": 1234}


def _run(tmp_path, *ckpts: str):
    run = tmp_path / "r"
    rundir.checkpoints_dir(run).mkdir(parents=True)
    for name in ckpts:
        (rundir.checkpoints_dir(run) / name).write_bytes(b"x")
    return run


def test_layout(tmp_path):
    assert rundir.config_path(tmp_path) == tmp_path / "config.yaml"
    assert rundir.metrics_path(tmp_path) == tmp_path / "metrics.jsonl"
    assert rundir.checkpoints_dir(tmp_path) == tmp_path / "checkpoints"
    assert rundir.samples_dir(tmp_path) == tmp_path / "samples"
    assert rundir.model_facts_path(tmp_path) == tmp_path / "model.json"


def test_find_checkpoint_run_dir_checkpoints_dir_and_file(tmp_path):
    run = _run(tmp_path, "last.ckpt", "best-step0000020.ckpt", "best-step0000100.ckpt")
    last = run / "checkpoints" / "last.ckpt"
    assert rundir.find_checkpoint(run) == last
    assert rundir.find_checkpoint(run / "checkpoints") == last
    assert rundir.find_checkpoint(last) == last
    assert rundir.find_checkpoint(run, best=True).name == "best-step0000100.ckpt"
    only_last = _run(tmp_path / "b", "last.ckpt")
    assert rundir.find_checkpoint(only_last, best=True).name == "last.ckpt"


def test_find_checkpoint_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        rundir.find_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        rundir.find_checkpoint(tmp_path)
    try:
        rundir.find_checkpoint(tmp_path)
    except NdvqError as e:
        assert "\n" not in str(e)


def test_run_dir_of(tmp_path):
    assert rundir.run_dir_of(tmp_path / "r" / "checkpoints" / "last.ckpt") == tmp_path / "r"
    assert rundir.run_dir_of(tmp_path / "loose" / "model.ckpt") == tmp_path / "loose"


def test_read_metrics_skips_and_counts_malformed_lines(tmp_path):
    p = tmp_path / "metrics.jsonl"
    good = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": "nan"}]
    p.write_text(json.dumps(good[0]) + "\n\n[1, 2]\nnot json\n" + json.dumps(good[1]) + "\n" + '{"step": 3, "lo')
    recs = rundir.read_metrics(p)
    assert recs == good and recs.skipped == 3  # a list, a non-JSON line, a half-written last line
    assert rundir.read_metrics(tmp_path) == good  # the run directory works too
    assert rundir.read_metrics(tmp_path / "none.jsonl") == []


def test_read_config(tmp_path):
    assert rundir.read_config(tmp_path) == {}
    rundir.config_path(tmp_path).write_text("model: {n_codes: 64}\n")
    assert rundir.read_config(tmp_path) == {"model": {"n_codes": 64}}
    rundir.config_path(tmp_path).write_text("model: {n_codes: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read") as e:
        rundir.read_config(tmp_path)
    assert "\n" not in str(e.value)
    rundir.config_path(tmp_path).write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping of config sections, got list"):
        rundir.read_config(tmp_path)


def test_model_facts_round_trip_and_errors(tmp_path):
    assert rundir.read_model_facts(tmp_path) is None
    path = rundir.write_model_facts(tmp_path / "new-run", FACTS)
    assert path == tmp_path / "new-run" / "model.json"
    assert rundir.read_model_facts(tmp_path / "new-run") == FACTS
    assert [p.name for p in (tmp_path / "new-run").iterdir()] == ["model.json"]  # no temp file left behind
    with pytest.raises(ValueError, match="lack"):
        rundir.write_model_facts(tmp_path, {"class": "Autoencoder"})
    rundir.model_facts_path(tmp_path).write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        rundir.read_model_facts(tmp_path)
    rundir.model_facts_path(tmp_path).write_text(json.dumps({k: v for k, v in FACTS.items() if k != "downsample"}))
    with pytest.raises(CheckpointError, match="downsample"):
        rundir.read_model_facts(tmp_path)


def test_check_run_dir(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        rundir.check_run_dir(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no metrics.jsonl"):
        rundir.check_run_dir(tmp_path)
    rundir.metrics_path(tmp_path).write_text("")
    assert rundir.check_run_dir(tmp_path) == tmp_path


def test_imports_no_torch():
    code = "import sys, ndvq.run.rundir; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
