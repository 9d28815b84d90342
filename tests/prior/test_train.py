"""``ndvq prior``: training on 1D/2D/3D and multi-column / hierarchical codes, exact resume, bad inputs."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest
from priorkit import PRIOR, make_run

from ndvq.cli import main
from ndvq.errors import CheckpointError
from ndvq.prior.store import prior_dir
from ndvq.prior.tokens import load_token_model
from ndvq.prior.train import train_prior
from ndvq.run.checkpoint import load_checkpoint
from ndvq.run.rundir import read_metrics


def _check_trained(run, steps: int) -> None:
    recs = read_metrics(prior_dir(run))
    train = [r for r in recs if r["split"] == "train"]
    val = [r for r in recs if r["split"] == "val"]
    assert [r["step"] for r in train] == list(range(1, steps + 1))
    assert val and all(r["nll_bits"] > 0 and "epoch" in r and "time" in r for r in train + val)
    tm, info = load_token_model(run)
    assert re.fullmatch(r"[0-9a-f]{16}", info["fingerprint"]) and len(info["block"]) == len(info["max_coords"])
    assert (prior_dir(run) / "model.safetensors").is_file() and (prior_dir(run) / "config.json").is_file()


@pytest.mark.parametrize("kind,extra", [
    ("audio", []),
    ("image", ["model.bottleneck=residual", "model.quantizer.num_quantizers=2", "model.quantizer.cosine=false"]),
    ("image", ["model.kind=hierarchical", "model.videogpt.downsample=[2,2]", "model.top.downsample=[2,2]",
               "model.top.n_codes=8"]),
    ("image", ["model.bottleneck=fsq", "model.quantizer.fsq_levels=[4,4]"]),
    ("volume", []),
])
def test_trains_a_few_steps(kind, extra, tmp_path):
    run = make_run(tmp_path, kind, extra)
    res = train_prior(run, overrides=[*PRIOR, "max_steps=3"])
    assert res.stopped == "finished" and res.step == 3
    _check_trained(run, 3)
    tm, info = load_token_model(run)
    assert info["n_grids"] == (2 if "model.kind=hierarchical" in extra else 1)


def test_blocks_smaller_than_the_item(image_run, tmp_path):
    res = train_prior(image_run, overrides=[*PRIOR, "max_steps=2", "block=[2,2]"], overwrite=True)
    assert res.step == 2 and json.loads((prior_dir(image_run) / "config.json").read_text())["block"] == [2, 2]


def test_interrupted_and_continued_matches_a_straight_run(tmp_path):
    run = make_run(tmp_path)
    over = [*PRIOR, "max_steps=6", "val_interval=3", "dropout=0.1"]
    train_prior(run, overrides=over)
    straight = [(r["split"], r["step"], r["nll_bits"]) for r in read_metrics(prior_dir(run))]
    weights = load_checkpoint(prior_dir(run) / "checkpoints" / "last.ckpt")["model"]

    def interrupt(step, rec):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    res = train_prior(run, overrides=over, overwrite=True, on_log=interrupt)
    assert res.stopped == "interrupted" and res.step == 2 and res.signal == signal.SIGINT
    assert load_checkpoint(prior_dir(run) / "checkpoints" / "last.ckpt")["state"]["step"] == 2
    assert not (prior_dir(run) / "model.safetensors").exists()  # exported only when finished
    res = train_prior(run, overrides=over)
    assert res.stopped == "finished" and res.step == 6
    resumed = [(r["split"], r["step"], r["nll_bits"]) for r in read_metrics(prior_dir(run))]
    assert resumed == straight
    again = load_checkpoint(prior_dir(run) / "checkpoints" / "last.ckpt")["model"]
    assert all((weights[k] == again[k]).all() for k in weights)


def test_cli_trains_and_refuses_bad_input(image_run, tmp_path, capsys):
    assert main(["prior", str(image_run), *PRIOR, "max_steps=2", "--overwrite"]) == 0
    assert "finished after 2 steps" in capsys.readouterr().out
    cases = [
        (["prior", str(tmp_path / "missing")], "does not exist"),
        (["prior", str(image_run), "bogus=1"], "unknown prior key 'bogus'"),
        (["prior", str(image_run), "--overwrite", "prior.max_steps=0"], "max_steps"),
        (["prior", str(image_run), "d_model=30", "n_heads=4", "--overwrite"], "multiple of n_heads"),
        (["prior", str(image_run), "--overwrite", "prior.block=[2,2,2]"], "needs 2 entries"),
        (["prior", str(image_run), "n_layers=3"], "drop that change"),
        (["prior", str(image_run), "-c", str(tmp_path / "none.yaml")], "does not exist"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
    assert load_token_model(image_run) is not None  # refused starts left the trained prior in place


def test_kl_vae_run_is_refused(tmp_path):
    run = make_run(tmp_path, "image", ["model.kind=klvae", "model.ldm.channels=[8,16]",
                                       "model.ldm.attention_levels=[false,false]", "model.ldm.norm_num_groups=4",
                                       "model.ldm.num_res_blocks=1", "model.embedding_dim=2"])
    with pytest.raises(CheckpointError, match="without discrete codes"):
        train_prior(run, overrides=PRIOR)
    assert load_token_model(run) is None


def test_no_prior_gives_none(tmp_path):
    assert load_token_model(tmp_path) is None


def test_shipped_config_is_the_defaults():
    from pathlib import Path

    from ndvq.prior.config import PriorConfig, load_prior_config

    assert load_prior_config(Path(__file__).resolve().parents[2] / "configs" / "prior.yaml") == PriorConfig()
