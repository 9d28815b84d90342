"""The quality benchmark's measuring tools (benchmarks/quality.py, issue 18): pooled vs per-patch PSNR,
batch-norm re-estimation that leaves weights and codebook alone, the ``restarts_until`` switch of the
diagnosis runs, and the target verdicts of the page."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

quality = pytest.importorskip("benchmarks.quality")

from ndvq import VQVAE  # noqa: E402


def _tiny(n_codes: int = 32, norm: str = "batch") -> VQVAE:
    torch.manual_seed(0)
    model = VQVAE(n_dims=2, in_channels=3, n_hiddens=16, n_res_layers=1, downsample=(4, 4), embedding_dim=8,
                  n_codes=n_codes, n_head=0, norm=norm)
    model.validate_inputs = False
    return model


def test_pooled_psnr_is_of_the_mean_mse_and_per_patch_psnr_the_mean_of_psnrs():
    x = torch.zeros(2, 3, 8, 8)
    err = torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)  # patch MSEs 0.01 and 1e-4

    def encode_decode(part):
        return part + err[: len(part)], torch.zeros(len(part), 2, 2, dtype=torch.long)

    res = quality.evaluate(encode_decode, x, k=4, with_ssim=False)
    assert res["psnr"] == pytest.approx(10 * math.log10(4 / ((0.01 + 1e-4) / 2)), abs=1e-3)
    assert res["psnr_patch"] == pytest.approx((10 * math.log10(4 / 0.01) + 10 * math.log10(4 / 1e-4)) / 2, abs=1e-3)
    assert res["used"] == pytest.approx(1 / 4)


def test_recalibration_changes_only_the_batch_norm_statistics():
    model = _tiny()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 16, 16) * 0.5)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = quality.recalibrated(model, torch.rand(16, 3, 16, 16) * 2 - 1, chunk=8)
    after = copy.state_dict()
    stats = [k for k in after if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and any(not torch.equal(after[k], before[k]) for k in stats)
    for k, v in after.items():
        if k not in stats:
            assert torch.equal(v, before[k]), k  # weights, codebook, EMA state untouched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the original too
    assert not copy.training


def test_restarts_until_stops_reseeding_from_that_step_on():
    model = _tiny(n_codes=64)  # more codes than a batch fills: some are dead every step
    batches = [torch.rand(4, 3, 16, 16) * 2 - 1 for _ in range(8)]
    res = quality._train(model, lambda x: model(x).loss, quality._closure("ndvq", model), batches, batches[0], 64,
                         probes=0, restarts_until=4)
    assert res["restarts"] > 0
    assert int(res["last_restart"].max()) < 4
    assert model.bottleneck.quantizer.restart == "none"


def test_weight_average_switch_returns_an_average_with_the_live_buffers():
    model = _tiny()
    batches = [torch.rand(4, 3, 16, 16) * 2 - 1 for _ in range(6)]
    res = quality._train(model, lambda x: model(x).loss, quality._closure("ndvq", model), batches, batches[0], 32,
                         probes=2, restarts_until=None, lr_schedule="cosine", weight_ema=0.5)
    ema = res["ema"]
    assert not ema.training and set(res["trace_ema"]) == set(res["trace"])
    live, avg = dict(model.named_parameters()), dict(ema.named_parameters())
    assert any(not torch.allclose(live[k], avg[k]) for k in live)  # an average of the steps, not the last weights
    for (name, b), (_, a) in zip(model.named_buffers(), ema.named_buffers()):
        assert torch.equal(a, b), name  # codebook and norm statistics: the trained model's


def test_schedule_switches_reach_the_optimiser():
    """A cosine schedule with a floor of 1.0 is the constant rate; warm-up or a lower floor changes the weights."""
    batches = [torch.rand(4, 3, 16, 16) * 2 - 1 for _ in range(4)]

    def trained(**schedule):
        torch.manual_seed(0)
        model = _tiny()
        quality._train(model, lambda x: model(x).loss, quality._closure("ndvq", model), batches, batches[0], 32,
                       probes=0, restarts_until=None, **schedule)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    constant = trained()
    assert torch.equal(trained(lr_schedule="cosine", min_lr_ratio=1.0), constant)
    assert not torch.allclose(trained(lr_schedule="cosine", min_lr_ratio=1.0, warmup_steps=2), constant)
    assert not torch.allclose(trained(lr_schedule="cosine", min_lr_ratio=0.1), constant)


def _run(model: str, psnr: float, alive: float, order: int, k: int = 512) -> dict:
    return {"model": model, "k": k, "steps": 1000, "seed": 0, "order": order, "variant": "", "psnr": psnr,
            "psnr_patch": psnr, "ssim": 0.5, "usage": 0.9, "alive": alive, "train_s": 1.0}


def test_targets_read_the_worst_run_against_the_reference_mean():
    runs = [_run("ndvq", 25.2, 0.99, 0), _run("ndvq", 25.6, 0.97, 1),
            _run("reference", 24.0, 0.9, 0), _run("reference", 24.2, 0.9, 1)]
    rows = quality.targets({quality.run_key(r): r for r in runs})
    verdicts = {row[4]: row[6] for row in rows}
    assert verdicts["worst run >= reference mean + 1.0 dB"] == "met"  # 25.2 >= 24.1 + 1.0
    assert verdicts["spread (max - min) <= 0.5 dB"] == "met"
    runs[0]["psnr"] = 25.0  # 25.0 < 25.1
    runs[1]["alive"] = 0.94
    rows = quality.targets({quality.run_key(r): r for r in runs})
    verdicts = {row[4]: row[6] for row in rows}
    assert verdicts["worst run >= reference mean + 1.0 dB"] == "**not met**"
    assert verdicts["spread (max - min) <= 0.5 dB"] == "**not met**"  # 0.6 dB
    assert verdicts["every run >= 95% alive"] == "**not met**"


def test_large_codebooks_are_read_on_the_mean_and_90_percent_alive():
    runs = [_run("ndvq", 25.0, 0.91, 0, k=4096), _run("ndvq", 26.0, 0.95, 1, k=4096),
            _run("reference", 24.0, 0.5, 0, k=4096)]
    verdicts = {row[4]: row[6] for row in quality.targets({quality.run_key(r): r for r in runs})}
    assert verdicts == {"mean >= reference mean + 1.5 dB": "met", "every run >= 90% alive": "met"}


def test_a_variant_measured_on_both_is_read_against_the_same_variant_of_the_reference():
    runs = [_run("ndvq", 25.2, 0.99, 0), _run("reference", 24.0, 0.9, 0),
            {**_run("ndvq", 25.4, 0.99, 0), "variant": "weight average 0.99"},
            {**_run("reference", 24.5, 0.9, 0), "variant": "weight average 0.99"},
            {**_run("ndvq", 26.0, 0.99, 0), "variant": "beta 0.05"}]  # ndvq only: a diagnosis, no target rows
    rows = quality.targets({quality.run_key(r): r for r in runs})
    worst = {row[3]: row[5] for row in rows if row[4].startswith("worst")}
    assert worst == {"1 vs 1": "25.20 vs 24.00 + 1.0", "1 vs 1 (weight average 0.99, both)": "25.40 vs 24.50 + 1.0"}


def test_the_ceiling_model_is_the_ndvq_backbone_unquantized_and_reads_n_a_for_codes():
    torch.manual_seed(3)
    vq = quality.build("ndvq", 64)[0]
    torch.manual_seed(3)
    net, step_loss, encode_decode = quality.build("continuous", 64)
    assert all(torch.equal(a, b) for a, b in zip(net.backbone.state_dict().values(), vq.backbone.state_dict().values()))
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    net.eval(), vq.eval()
    recon, codes = encode_decode(x)
    assert codes is None and torch.equal(recon, vq.backbone.decode(vq.backbone.encode(x)))
    res = quality.evaluate(encode_decode, x, k=64, with_ssim=False)
    assert math.isnan(res["used"]) and res["psnr"] == pytest.approx(
        float(10 * torch.log10(4.0 / ((recon.clamp(-1, 1) - x) ** 2).mean())), abs=1e-4)
    run = {**_run("continuous", 25.0, float("nan"), 0), "usage": float("nan")}
    rows = [quality.summary_table({quality.run_key(run): run}), quality.per_run_table({quality.run_key(run): run})]
    assert all("n/a" in table and "nan" not in table for table in rows)
    assert quality.targets({quality.run_key(run): run}) == []  # a ceiling has no targets


def test_each_run_names_the_cpu_that_ran_it_in_the_per_run_table(monkeypatch):
    monkeypatch.setattr(quality, "train_run", lambda **kw: _run("ndvq", 24.0, 0.99, kw["order"]))
    monkeypatch.setattr(quality, "machine_info", lambda threads: {"cpu": "Test CPU 9000"})
    run = quality._task({"order": 2})
    old = {**_run("ndvq", 23.0, 0.98, 3)}  # stored before runs named their CPU
    table = quality.per_run_table({quality.run_key(run): run, quality.run_key(old): old})
    rows = [line for line in table.splitlines() if line.startswith("| 512")]
    assert [row.rstrip(" |").rsplit("| ", 1)[-1] for row in rows] == ["Test CPU 9000", "n/a"]


def test_the_reference_is_evaluated_with_the_codes_and_reconstruction_of_its_own_forward():
    """The reference's evaluation skips its codebook's eval-time one-hot; codes and reconstruction must be
    what its ``forward`` gives (only in the benchmark venv, where ``nd_vq_vae`` is installed)."""
    pytest.importorskip("nd_vq_vae")
    torch.manual_seed(0)
    net, step_loss, encode_decode = quality.build("reference", 64)
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    net.train()
    step_loss(x)  # initialises the codebook from the batch (the package's rule)
    net.eval()
    with torch.no_grad():
        _, recon, vq = net(x)
        fast_recon, codes = encode_decode(x)
    assert torch.equal(codes, vq["encodings"])
    torch.testing.assert_close(fast_recon, recon, atol=1e-5, rtol=1e-5)


def test_runs_record_their_norm_and_each_norm_is_its_own_row_read_against_the_same_reference():
    """ndvq's default norm changed (batch -> channel): stored runs of both stay apart in every table, each
    read against the reference (which has no norm of its own to record)."""
    assert quality.default_norm() == "channel"
    runs = [{**_run("ndvq", 25.2, 0.99, 0), "norm": "channel"}, {**_run("ndvq", 24.2, 0.99, 0), "norm": "batch"},
            _run("reference", 24.0, 0.9, 0)]
    results = {quality.run_key(r): r for r in runs}
    assert len(results) == 3  # the same (seed, order) under two norms: two entries
    worst = {row[2]: (row[5], row[6]) for row in quality.targets(results) if row[4].startswith("worst")}
    assert worst == {"channel": ("25.20 vs 24.00 + 1.0", "met"), "batch": ("24.20 vs 24.00 + 1.0", "**not met**")}
    summary = quality.summary_table(results)
    assert "ndvq VQVAE (VideoGPT + VQ), channel norm |" in summary and "ndvq VQVAE (VideoGPT + VQ), batch norm |" in summary
    torch.manual_seed(0)
    assert quality.train_run("ndvq", 16, 0, 0, steps=2, quick=True)["norm"] == "channel"


def test_runs_record_their_commitment_weight_and_runs_stored_without_one_read_as_0_25():
    """ndvq's default beta changed (0.25 -> 0.5): runs stored before runs recorded it keep their keys and
    groups; a 0.5 run is its own row, read against the same reference."""
    old = {**_run("ndvq", 24.4, 0.99, 0), "norm": "channel"}  # stored before "beta" was recorded: 0.25
    new = {**_run("ndvq", 25.1, 0.99, 0), "norm": "channel", "beta": 0.5}
    ref = _run("reference", 24.0, 0.9, 0)
    results = {quality.run_key(r): r for r in (old, new, ref)}
    assert len(results) == 3 and quality.run_key(old) == quality.run_key({**old, "beta": 0.25})
    worst = {row[2]: row[6] for row in quality.targets(results) if row[4].startswith("worst")}
    assert worst == {"channel": "**not met**", "channel, beta 0.5": "met"}
    assert "ndvq VQVAE (VideoGPT + VQ), channel norm, beta 0.5 |" in quality.summary_table(results)
    torch.manual_seed(0)
    assert quality.train_run("ndvq", 16, 0, 0, steps=2, quick=True)["beta"] == 0.5
    assert quality.train_run("ndvq", 16, 0, 0, steps=2, quick=True, overrides={"codebook_beta": 0.25})["beta"] == 0.25


def test_the_page_reads_today_s_defaults_first_and_the_earlier_settings_apart(tmp_path):
    """The first targets table is the setting ndvq builds today (asked of a built model, not a literal);
    the runs of earlier defaults are read in a table of their own."""
    today = quality.default_setting()
    built = {"norm": quality.default_norm(), "beta": quality._beta_of(VQVAE(n_dims=2, in_channels=3, n_codes=16))}
    assert today == quality.setting({"model": "ndvq", **built}) != "batch"
    runs = [{**_run("ndvq", 25.2, 0.99, 0), **built},
            {**_run("ndvq", 24.2, 0.99, 0), "norm": "batch"}, _run("reference", 24.0, 0.9, 0)]
    results = {quality.run_key(r): r for r in runs}
    assert {row[2] for row in quality.targets(results, lambda s: s == "batch")} == {"batch"}
    page = tmp_path / "quality.md"
    quality.write_doc(page, results, {"date": "today"}, "python -m benchmarks.quality")
    first, rest = page.read_text().split("## Targets of the earlier defaults", 1)
    first = first.split(f"## Targets (issue 18), today's defaults ({today})", 1)[1]
    assert f"| {today} |" in first and "| batch |" not in first
    assert "| batch |" in rest.split("## Summary", 1)[0] and f"| {today} |" not in rest.split("## Summary", 1)[0]
