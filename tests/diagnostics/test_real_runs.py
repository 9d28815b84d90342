"""Real short training runs with deliberately bad settings, diagnosed by the doctor; report and
tune on real runs. Each run is tiny (60 steps of a small VQ-VAE on the built-in sample images)."""

from __future__ import annotations

import json

import pytest

from ndvq.config import load_config
from ndvq.diagnostics.doctor import diagnose_run, warning_callback
from ndvq.diagnostics.report import build_report, load_run

TINY = ["data.kind=samples", "data.sample_patches=256", "data.patch_size=[32,32]", "model.videogpt.n_hiddens=16",
        "model.videogpt.num_res_blocks=1", "model.videogpt.n_head=0", "train.max_steps=60", "train.batch_size=16",
        "train.val_interval=20", "train.log_interval=5", "train.val_batches=2", "train.sample_interval=60",
        "train.ckpt_interval=60", "train.warmup_steps=0", "train.accelerator=cpu", "train.doctor_warnings=false"]
PLAIN_VQ = ["model.n_codes=1024", "model.embedding_dim=32", "model.quantizer.update=gradient",
            "model.quantizer.init=random", "model.quantizer.restart=none", "model.quantizer.codebook_dim=null",
            "model.quantizer.cosine=false"]


def _train(root, name, extra):
    from ndvq.run.train import train

    cfg = load_config(None, [*TINY, *extra, f"run.root={root}", f"run.name={name}"])
    on_warning = warning_callback(cfg.model_dump(mode="json")) if cfg.train.doctor_warnings else None
    return train(cfg, on_warning=on_warning).run_dir


@pytest.fixture(scope="module")
def collapsed_run_and_output(tmp_path_factory):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        run = _train(tmp_path_factory.mktemp("runs"), "plain-vq", [*PLAIN_VQ, "train.doctor_warnings=true"])
    return run, buf.getvalue()


@pytest.fixture(scope="module")
def collapsed_run(collapsed_run_and_output):
    return collapsed_run_and_output[0]


def test_training_prints_the_collapse_warning_and_keeps_going(collapsed_run_and_output):
    run, output = collapsed_run_and_output
    lines = [ln for ln in output.splitlines() if ln.startswith("doctor [critical]: Codebook collapse")]
    assert len(lines) == 1, output[-2000:]  # printed once, not at every validation
    assert "model.quantizer.restart=batch" in lines[0]
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 60  # the run was not stopped


def test_plain_vq_with_large_codebook_is_diagnosed_as_collapse(collapsed_run):
    findings = diagnose_run(collapsed_run)
    top = findings[0]
    assert top.rule == "collapse" and top.severity == "critical", top
    assert "of 1024 codes" in top.observed
    assert top.fixes[0] == "model.quantizer.restart=batch"  # the first thing to change for a plain VQ


def test_learning_rate_far_too_high_is_diagnosed_as_instability(tmp_path):
    run = _train(tmp_path, "hot", ["train.learning_rate=0.5", "train.grad_clip=null", "train.lr_schedule=constant",
                                   "model.n_codes=64", "model.embedding_dim=16"])
    top = diagnose_run(run)[0]
    assert top.rule in ("instability", "nonfinite") and top.severity == "critical", top
    assert top.fixes[0].startswith("train.learning_rate=")
    assert float(top.fixes[0].split("=")[1]) < 0.5


def test_report_encodes_the_val_split_with_the_best_checkpoint(collapsed_run):
    run = load_run(collapsed_run, max_items=32)
    assert run.usage is not None and run.usage["kind"] == "codes", run.usage_note
    assert run.usage["checkpoint"].startswith("best-step") and run.usage["items"] == 32
    counts = run.usage["counts"][0][0]
    assert len(counts) == 1024 and sum(counts) == 32 * 8 * 8  # 32 items x (32/4)^2 tokens
    assert sum(c > 0 for c in counts) < 0.05 * 1024  # the collapse shows in the histogram too
    cached = json.loads((collapsed_run / "code_usage.json").read_text())
    assert cached["counts"] == run.usage["counts"]
    again = load_run(collapsed_run, max_items=32)
    assert "(cached)" in again.usage_note
    html = build_report([again])
    assert "Codebook collapse" in html and "data:image/png;base64," in html


def test_tune_with_real_training_interrupted_and_resumed(tmp_path):
    """3 trials of 3 steps; the second is interrupted, the study resumes and writes the best config."""
    from ndvq.diagnostics.tune import tune
    from ndvq.run.train import train

    base = tmp_path / "base.yaml"
    base.write_text("data: {kind: samples, sample_patches: 64, patch_size: [16, 16]}\n"
                    "model: {embedding_dim: 8, n_codes: 32, videogpt: {n_hiddens: 8, num_res_blocks: 0, n_head: 0, norm: group, "
                    "norm_num_groups: 4, downsample: [4, 4]}}\n"
                    "train: {max_steps: 3, batch_size: 8, val_interval: 1, val_batches: 1, log_interval: 1, "
                    "sample_interval: 100, ckpt_interval: 100, accelerator: cpu, doctor_warnings: false}\n")
    space = tmp_path / "space.yaml"
    space.write_text("train.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\nmodel.quantizer.beta: [0.25, 0.5]\n")
    calls = []

    def interrupting(cfg, resume=None, on_validation=None, on_warning=None):
        calls.append(cfg.run.name)

        def cb(step, metrics):
            if len(calls) == 2 and step == 2:
                raise KeyboardInterrupt
            on_validation(step, metrics)
        return train(cfg, resume=resume, on_validation=cb, on_warning=on_warning)

    study = tmp_path / "study"
    with pytest.raises(KeyboardInterrupt):
        tune(base, space, 3, study, train_fn=interrupting)
    res = tune(base, space, 3, study, train_fn=train)
    states = [t.state.name for t in res.study.trials]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1
    best = load_config(res.best_config_path)
    assert best.train.max_steps == 3
    assert (study / "trials" / "trial0000" / "metrics.jsonl").is_file()
    assert (study / "results.csv").is_file() and res.importance_path.is_file()


def test_kl_vae_run_doctor_and_latent_histogram(tmp_path):
    run = _train(tmp_path, "kl", ["model.kind=klvae", "model.embedding_dim=4", "model.ldm.channels=[8,16]", "model.ldm.norm_num_groups=4",
                                  "model.ldm.attention_levels=[false,false]", "model.ldm.num_res_blocks=1",
                                  "model.ldm.with_encoder_nonlocal_attn=false", "model.ldm.with_decoder_nonlocal_attn=false",
                                  "train.max_steps=20", "train.val_interval=10", "train.sample_interval=20", "train.ckpt_interval=20"])
    findings = diagnose_run(run)
    assert findings and all(f.rule not in ("collapse", "low_perplexity", "commitment_high") for f in findings)
    data = load_run(run, max_items=16)
    assert data.usage["kind"] == "latent", data.usage_note
    assert sum(data.usage["hist"]) == 16 * 4 * 16 * 16 and data.usage["scale_factor"] > 0  # 16 items x 4 ch x (32/2)^2
    html = build_report([data])
    assert "Latent distribution" in html and "scale_factor" in html


def test_lfq_run_is_judged_against_model_n_codes(tmp_path):
    """A real LFQ run with model.n_codes=512: the run records the model's facts (model.json) and the doctor
    and the report count 512 codes (not 2**len(levels) from config strings)."""
    import re

    from ndvq.run.rundir import read_model_facts

    run = _train(tmp_path, "lfq", ["model.bottleneck=lfq", "model.n_codes=512", "train.max_steps=20",
                                   "train.val_interval=10", "train.sample_interval=20", "train.ckpt_interval=20"])
    assert read_model_facts(run)["codebook_sizes"] == [512]
    found = " ".join(f.observed for f in diagnose_run(run))
    assert all(n == "512" for n in re.findall(r"of (\d+) codes", found)), found
    data = load_run(run, max_items=16)
    assert data.usage["n_codes"] == [512] and len(data.usage["counts"][0][0]) == 512, data.usage_note
    html = build_report([data])
    assert re.search(r"<td>[\d.]+ / 512</td>", html)
