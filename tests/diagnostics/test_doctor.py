"""The doctor on synthetic metrics logs: one pathology each, top finding asserted."""

from __future__ import annotations

import json
import time
from dataclasses import fields

import numpy as np
import pytest
from diag_synthetic import SCENARIOS, base_config, scenario, write_run

from ndvq.config import load_config
from ndvq.diagnostics.doctor import (
    diagnose,
    diagnose_run,
    facts_from_config,
    findings_to_json,
    format_findings,
    warning_callback,
    warning_lines,
)
from ndvq.diagnostics.rules import SEVERITIES, Thresholds, thresholds_table
from ndvq.run.rundir import read_metrics


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_top_finding(name):
    records, config = scenario(name)
    findings = diagnose(records, config)
    assert findings[0].rule == SCENARIOS[name], format_findings(findings)
    ranks = [SEVERITIES.index(f.severity) for f in findings]
    assert ranks == sorted(ranks)
    if name != "healthy":
        assert findings[0].fixes, "a problem finding must suggest fixes"
        assert any(ch.isdigit() for ch in findings[0].observed), "observed must carry numbers"


@pytest.mark.parametrize("name", list(SCENARIOS))
@pytest.mark.parametrize("seed", [1, 2])
def test_top_finding_other_noise(name, seed):
    records, config = scenario(name, seed=seed)
    assert diagnose(records, config)[0].rule == SCENARIOS[name]


def test_healthy_has_no_problem_findings():
    findings = diagnose(*scenario("healthy"))
    assert [f.severity for f in findings] == ["ok"]
    assert "perplexity" in findings[0].observed and "best val loss" in findings[0].observed


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_fix_is_a_valid_train_override(name):
    """Every suggested key=value parses and validates against ndvq.config.Config."""
    records, config = scenario(name)
    findings = diagnose(records, config)
    for f in findings:
        for fix in f.fixes:
            cfg = load_config(None, [fix], base=config)  # raises ConfigError on unknown key / bad value
            key, _, value = fix.partition("=")
            node = cfg
            for part in key.split("."):
                node = getattr(node, part)
            assert node is not None, fix


@pytest.mark.parametrize("quantizer", [
    {"bottleneck": "fsq"}, {"bottleneck": "lfq"},
    {"quantizer.restart": "none", "quantizer.init": "random", "quantizer.update": "gradient"},
    {"bottleneck": "residual"},
])
def test_collapse_fixes_per_quantizer_kind_validate(quantizer):
    records, _ = scenario("collapse")
    config = base_config(model=quantizer)
    findings = diagnose(records, config)
    for f in findings:
        for fix in f.fixes:
            load_config(None, [fix], base=config)
    if quantizer.get("quantizer.restart") == "none":
        top = findings[0].fixes
        assert top[0] == "model.quantizer.restart=batch" and "model.quantizer.init=kmeans" in top


def test_oom_fixes_follow_the_guide_order():
    records, _ = scenario("oom")
    config = base_config(model={"kind": "klvae", "ldm.attention_levels": [False, True, True]},
                         data={"patch_size": [256, 256]})
    fixes = diagnose(records, config)[0].fixes
    keys = [f.split("=")[0] for f in fixes]
    assert keys[:4] == ["train.batch_size", "model.ldm.channels", "data.patch_size", "model.ldm.attention_levels"]
    for fix in fixes:
        load_config(None, [fix], base=config)


def test_nan_kl_suggests_lower_lr_and_kl_weight():
    records, _ = scenario("nonfinite")
    config = base_config(model={"kind": "klvae"}, loss={"kl_weight": 1e-4})
    f = diagnose(records, config)[0]
    assert f.rule == "nonfinite" and f.severity == "critical"
    assert f.fixes[0].startswith("train.learning_rate=") and f.fixes[1] == "loss.kl_weight=1e-05"


def test_observed_names_numbers_and_steps():
    f = diagnose(*scenario("collapse"))[0]
    assert "of 512 codes" in f.observed and "steps 1500-2000" in f.observed


def test_too_early():
    records, config = scenario("healthy")
    f = diagnose(records[:3], config)
    assert [x.rule for x in f] == ["too_early"]
    assert diagnose([], config)[0].rule == "too_early"


def test_collapse_not_reported_during_warmup():
    """The first warmup_fraction of the run is ignored by codebook rules (k-means init / restarts settle)."""
    records, config = scenario("collapse")
    early = [r for r in records if r.get("step", 0) <= 300]  # still in the first part of the curve
    config["train"]["warmup_steps"] = 1000
    assert "collapse" not in [f.rule for f in diagnose(early, config)]


def test_thresholds_are_used():
    records, config = scenario("collapse")
    assert diagnose(records, config)[0].rule == "collapse"
    lenient = Thresholds(collapse_ratio=1e-4, collapse_perplexity=1.0, dead_growth=1.0, low_perplexity_ratio=1e-4)
    assert "collapse" not in [f.rule for f in diagnose(records, config, lenient)]


def test_thresholds_table_documents_every_field():
    table = thresholds_table()
    for f in fields(Thresholds):
        assert f.metadata["doc"], f.name
        assert f"`{f.name}`" in table


def test_config_object_and_dict_agree():
    from ndvq.config import Config

    records, config = scenario("overfitting")
    a = diagnose(records, config)
    b = diagnose(records, Config.model_validate(config))
    assert [f.rule for f in a] == [f.rule for f in b]
    with pytest.raises(TypeError, match="config must be a dict"):
        diagnose(records, 3)


def test_warning_lines_only_for_severe():
    assert warning_lines(*scenario("healthy")) == []
    lines = warning_lines(*scenario("collapse"))
    assert len(lines) == 1 and "Codebook collapse" in lines[0] and "try model." in lines[0]


def test_fast_enough_for_every_validation():
    """50k steps logged every 10 steps (5000 train + 500 val records): well under 0.2 s."""
    records, config = scenario("healthy")
    facts = facts_from_config(config)  # asked once per run, as the training loop's warning callback does
    big = []
    for k in range(25):
        for r in records:
            big.append(dict(r, step=r["step"] + k * 2001))
    t0 = time.perf_counter()
    diagnose(big, config, facts=facts)
    assert time.perf_counter() - t0 < 0.5


def test_running_run_with_truncated_last_line(tmp_path):
    records, config = scenario("collapse")
    run = write_run(tmp_path, "r", records[: len(records) // 2], config, truncate_last=True)
    assert len(read_metrics(run / "metrics.jsonl")) == len([r for r in records[: len(records) // 2]]) - 1
    findings = diagnose_run(run)
    assert findings[0].rule in ("collapse", "low_perplexity")


def test_nan_written_as_string_is_nonfinite():
    """The logger writes non-finite floats as strings ("nan") so each line stays valid JSON."""
    records, config = scenario("healthy")
    records = [dict(r) for r in records]
    records[150]["loss"] = "nan"
    f = diagnose(records, config)[0]
    assert f.rule == "nonfinite" and str(records[150]["step"]) in f.observed


def test_oom_from_log_file(tmp_path):
    records, config = scenario("oom")
    run = write_run(tmp_path, "oom", records, config)
    assert diagnose_run(run)[0].rule == "out_of_memory"


def test_json_output(tmp_path):
    records, config = scenario("instability")
    run = write_run(tmp_path, "x", records, config)
    data = json.loads(findings_to_json(diagnose_run(run), run))
    assert data["run"] == str(run)
    top = data["findings"][0]
    assert top["rule"] == "instability" and set(top) == {"severity", "rule", "title", "observed", "cause", "fixes"}


def test_run_dir_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        diagnose_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no metrics.jsonl"):
        diagnose_run(tmp_path / "empty")


def test_docs_thresholds_table_is_in_sync():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "tuning.md").read_text()
    block = text.split("<!-- thresholds:start -->")[1].split("<!-- thresholds:end -->")[0].strip()
    assert block == thresholds_table(), "regenerate the table in docs/tuning.md from rules.thresholds_table()"


@pytest.mark.parametrize("quantizer, expected", [
    ({}, ["model.quantizer.restart=replay", "model.quantizer.restart_share=0.75"]),
    ({"quantizer.restart_threshold": 2.0, "quantizer.restart_sampling": "uniform"},
     ["model.quantizer.restart_threshold=4.0", "model.quantizer.restart_sampling=error"]),
])
def test_dead_code_fixes_follow_the_threshold_rule(quantizer, expected):
    records, _ = scenario("dead_codes")
    config = base_config(model=quantizer)
    f = next(x for x in diagnose(records, config) if x.rule == "dead_codes")
    for fix in expected:
        assert fix in f.fixes, f.fixes
    for fix in f.fixes:
        load_config(None, [fix], base=config)


@pytest.mark.parametrize("level, peak, critical", [(1.0, 300.0, True), (1.0, 120.0, True), (1.0, 50.0, False),
                                                   (0.1, 50.0, False)])
def test_a_loss_blowup_early_in_the_run_is_critical(level, peak, critical):
    """A train loss above 100x the recent median and above 100 is a blow-up (critical) even when the run
    recovers: a real lr=0.5 run logged 251 at step 5 against a recent median of 0.29 (870x). The train
    losses are scaled so their recent median is ``level``; one early record is set to ``peak``."""
    records, config = scenario("healthy")
    train = [r for r in records if r["split"] == "train"]
    scale = level / float(np.median([r["loss"] for r in train[-len(train) // 4:]]))
    for r in train:
        r["loss"] *= scale
    train[1]["loss"] = peak
    findings = [f for f in diagnose(records, config) if f.rule == "instability"]
    exploded = any("exploded" in f.observed and f.severity == "critical" for f in findings)
    assert exploded == critical, findings


# ----------------------------------------------------------------------------- model facts, old key names

def _facts(sizes, **args):
    return {"class": "Autoencoder", "args": args, "codebook_sizes": list(sizes), "downsample": [4, 4],
            "code_shapes": None, "n_parameters": 1}


def test_lfq_run_is_judged_against_its_own_codebook_size():
    """An LFQ run with model.n_codes=512 has 512 codes (the model says so), not 2**len(levels)."""
    records, _ = scenario("collapse")
    config = base_config(model={"bottleneck": "lfq", "n_codes": 512})
    f = diagnose(records, config)[0]
    assert f.rule == "collapse" and "of 512 codes" in f.observed, f.observed


def test_recorded_model_facts_are_asked_not_the_config(tmp_path):
    from ndvq.run.rundir import write_model_facts

    records, config = scenario("collapse")  # the config says model.n_codes=512
    run = write_run(tmp_path, "r", records, config)
    write_model_facts(run, _facts([1024], bottleneck="vq", n_codes=1024))
    f = diagnose_run(run)[0]
    assert f.rule == "collapse" and "of 1024 codes" in f.observed, f.observed


def test_a_model_without_codes_gets_no_codebook_rules():
    records, config = scenario("collapse")  # a VQ config, but the model's facts say: no codebook
    rules = [f.rule for f in diagnose(records, config, facts=_facts([], bottleneck="gaussian", backbone="ldm"))]
    assert not {"collapse", "dead_codes", "low_perplexity", "commitment_high"} & set(rules), rules


def test_old_key_names_of_recorded_runs_are_read():
    from ndvq.diagnostics.view import RunView, Series

    old = {"model": {"n_hiddens": 64, "n_res_layers": 3, "codebook_beta": 0.5, "klvae": {"channels": [8, 16]},
                     "quantizer": {"kind": "fsq", "levels": [4, 4]}}}
    view = RunView(Series.from_records([]), Series.from_records([]), old, [], Thresholds(), _facts([16]))
    assert view.cfg("model.videogpt.n_hiddens") == 64 and view.cfg("model.videogpt.num_res_blocks") == 3
    assert view.cfg("model.quantizer.beta") == 0.5 and view.cfg("model.ldm.channels") == [8, 16]
    assert view.cfg("model.quantizer.fsq_levels") == [4, 4] and view.cfg("model.bottleneck") == "fsq"
    new = RunView(view.train, view.val, {"model": {"videogpt": {"n_hiddens": 32}, "n_hiddens": 64}}, [],
                  Thresholds(), _facts([16], videogpt={"n_hiddens": 16}))
    assert new.cfg("model.videogpt.n_hiddens") == 16  # the model's own arguments first, then the new name


def test_fixes_use_the_new_key_names():
    records, config = scenario("high_commitment")
    fixes = [x for f in diagnose(records, config) for x in f.fixes]
    assert any(x.startswith("model.quantizer.beta=") for x in fixes), fixes
    records, config = scenario("recon_flat")
    fixes = next(f for f in diagnose(records, config) if f.rule == "recon_flat").fixes
    assert fixes[0].startswith("model.videogpt.n_hiddens=") and fixes[1].startswith("model.videogpt.num_res_blocks=")


def test_warning_callback_reports_each_finding_once():
    records, config = scenario("collapse")
    cb = warning_callback(config)
    half = [r for r in records if r["step"] <= 1600]
    lines = cb(half)
    assert len(lines) == 1 and lines[0].startswith("doctor [critical]: Codebook collapse"), lines
    assert cb(records) == []  # the same finding again: not repeated
    assert warning_callback(config)(records[:3]) == []  # too early: nothing


@pytest.mark.parametrize("name", ["val_gap", "overfitting"])
def test_augment_is_suggested_only_where_the_data_kind_has_it(name):
    records, config = scenario(name)
    assert "data.augment=true" in diagnose(records, config)[0].fixes  # the built-in samples augment
    config["data"]["kind"] = "audio"
    fixes = diagnose(records, config)[0].fixes
    assert fixes and "data.augment=true" not in fixes  # audio has no augmentations: not a fix


def test_constant_lr_suggests_a_weight_average_unless_one_is_kept():
    """Under a constant rate the last weights bounce (issue 18): the doctor offers train.weight_ema first (the
    default since 2026-12-03; a run recorded before names none), then a decay; a run that keeps an average
    delivers it, so the finding is not raised."""
    records, config = scenario("lr_constant")
    findings = diagnose(records, config)
    assert findings[0].rule == "lr_constant"
    assert findings[0].fixes[:2] == ["train.weight_ema=0.99", "train.lr_schedule=cosine"]
    config["train"]["weight_ema"] = 0.995
    assert "lr_constant" not in [f.rule for f in diagnose(records, config)]


def test_collapse_fixes_never_propose_unit_length_residual_levels():
    """A residual run searching in its own (8-d) latent gets no cosine=true fix: with no projection every
    level would return a unit-length vector (ResidualVQ warns about it); a vq run still gets it."""
    records, _ = scenario("collapse")
    quantizer = {"quantizer.cosine": False, "quantizer.codebook_dim": None, "embedding_dim": 8}
    residual = [x for f in diagnose(records, base_config(model={"bottleneck": "residual", **quantizer})) for x in f.fixes]
    vq = [x for f in diagnose(records, base_config(model={"bottleneck": "vq", **quantizer})) for x in f.fixes]
    assert "model.quantizer.cosine=true" in vq and "model.quantizer.cosine=true" not in residual, (vq, residual)
