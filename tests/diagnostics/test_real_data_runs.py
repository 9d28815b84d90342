"""The doctor on runs over real files with the properties that misled it: short 8 kHz clips padded
into long windows (a skewed code distribution, not a collapse), a series whose val file holds another
quantity (a train/val mismatch, not instability); plus the rule logic on recorded metrics."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fidelity"))
import realfiles as rf  # noqa: E402

from ndvq.config import load_config  # noqa: E402
from ndvq.diagnostics.doctor import diagnose, diagnose_run  # noqa: E402
from ndvq.diagnostics.rules import Finding, consistent_fixes  # noqa: E402

TINY = ["model.videogpt.n_hiddens=16", "model.videogpt.num_res_blocks=1", "model.videogpt.n_head=0",
        "model.videogpt.norm=group", "model.videogpt.norm_num_groups=8", "model.n_dims=1", "model.in_channels=1",
        "model.videogpt.downsample=[4]", "train.batch_size=4", "train.log_interval=2", "train.val_interval=10",
        "train.val_batches=2", "train.sample_interval=1000", "train.ckpt_interval=1000", "train.warmup_steps=0",
        "train.num_workers=0", "train.accelerator=cpu", "train.doctor_warnings=false"]


def _train(tmp_path, extra):
    from ndvq.run.train import train

    return train(load_config(None, [*TINY, *extra, f"run.root={tmp_path}", "run.name=r"])).run_dir


def _keys(findings):
    out = {}
    for f in findings:
        for fix in f.fixes:
            k, _, v = fix.partition("=")
            out.setdefault(k, set()).add(v)
    return out


@pytest.mark.slow
def test_short_clips_run_has_no_critical_collapse(tmp_path):
    rf.speech_clips(tmp_path / "clips", n=16, seed=3)
    run = _train(tmp_path, ["data.kind=audio", f"data.root={tmp_path / 'clips'}", "data.segment_length=8192",
                            "model.n_codes=256", "model.embedding_dim=8", "train.max_steps=40"])
    findings = diagnose_run(run)
    assert not any(f.severity == "critical" for f in findings), [f.title for f in findings]
    assert all(len(v) == 1 for v in _keys(findings).values())  # never two values for one key
    text = " ".join(f.cause for f in findings)
    assert "batch-norm" not in text and "high-dimensional" not in text  # group norm, 8-dim lookup


@pytest.mark.slow
def test_series_val_of_another_quantity_is_a_mismatch_not_instability(tmp_path):
    data = tmp_path / "series"
    rf.mixed_csvs(data / "train", n5=4)
    (data / "train" / "gdp.csv").rename(tmp_path / "gdp.csv")
    (data / "val").mkdir()
    (tmp_path / "gdp.csv").rename(data / "val" / "gdp.csv")
    with pytest.warns(RuntimeWarning, match="sigma"):
        run = _train(tmp_path, ["data.kind=series", f"data.root={data}", "data.channels=1", "data.segment_length=32",
                                "train.max_steps=40", "train.learning_rate=0.003"])
    findings = diagnose_run(run)
    rules = {f.rule for f in findings}
    assert "mismatch" in rules and "instability" not in rules, [(f.rule, f.observed) for f in findings]


def _records(n_codes_used=0.99, val_psnr=30.0, val_recon=None):
    recs = []
    for s in range(0, 400, 10):
        recs.append({"step": s, "split": "train", "loss": 1.0 / (1 + s / 50), "recon_loss": 1.0 / (1 + s / 50),
                     "perplexity": 20.0, "window_usage": n_codes_used, "dead_codes": 0.0, "lr": 3e-4})
    for s in range(100, 400, 100):
        recs.append({"step": s, "split": "val", "recon_loss": val_recon or 1.0 / (1 + s / 50),
                     "psnr": val_psnr, "perplexity": 20.0, "usage": 0.6})
    return recs


CFG = {"model": {"kind": "vqvae", "n_codes": 1024, "embedding_dim": 32, "videogpt": {"norm": "group"}},
       "data": {"kind": "audio", "segment_length": 16384}}


def test_low_perplexity_with_used_codebook_is_not_collapse():
    found = diagnose(_records(n_codes_used=0.99), CFG)
    assert not any(f.rule == "collapse" for f in found)
    skew = next(f for f in found if f.rule == "low_perplexity")
    assert skew.title == "Few codes take most tokens" and "silence" in skew.cause
    assert any(f.rule == "collapse" and f.severity == "critical" for f in diagnose(_records(n_codes_used=0.01), CFG))


def test_trivial_val_psnr_with_smooth_train_loss_is_a_mismatch():
    found = diagnose(_records(val_psnr=-25.0, val_recon=400.0), CFG)
    rules = {f.rule for f in found}
    assert "mismatch" in rules and "instability" not in rules and "val_gap" not in rules


def test_contradictory_fixes_are_dropped():
    a = Finding("critical", "A", "", "", ["model.n_codes=256", "train.learning_rate=0.0001"], "a")
    b = Finding("warning", "B", "", "", ["model.n_codes=2048", "model.embedding_dim=16"], "b")
    consistent_fixes([a, b])
    assert b.fixes == ["model.embedding_dim=16"] and a.fixes == ["model.n_codes=256", "train.learning_rate=0.0001"]
