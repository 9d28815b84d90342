"""`ndvq doctor | report | tune` through the real CLI entry point."""

from __future__ import annotations

import json

from diag_synthetic import add_samples, scenario, write_run

from ndvq.cli import main


def test_doctor_text_and_json(tmp_path, capsys):
    run = write_run(tmp_path, "c", *scenario("collapse"))
    assert main(["doctor", str(run)]) == 0
    out = capsys.readouterr().out
    assert "1. [CRITICAL] Codebook collapse" in out and "1) model.quantizer.codebook_dim=8" in out
    assert main(["doctor", str(run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["findings"][0]["rule"] == "collapse"


def test_doctor_scans_a_crash_log(tmp_path, capsys):
    records, config = scenario("healthy")
    run = write_run(tmp_path, "h", records[:40], config)
    log = tmp_path / "stderr.txt"
    log.write_text("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.5 GiB\n")
    assert main(["doctor", str(run), "--log", str(log), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["findings"][0]["rule"] == "out_of_memory"


def test_doctor_missing_run_is_one_line_exit_2(tmp_path, capsys):
    assert main(["doctor", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ndvq doctor: error: run folder") and "does not exist" in err


def test_report_cli(tmp_path, capsys):
    run = write_run(tmp_path, "r", *scenario("healthy"))
    add_samples(run, "image")
    out = tmp_path / "out" / "r.html"
    assert main(["report", str(run), "--out", str(out), "--no-encode"]) == 0
    assert out.is_file() and "report written to" in capsys.readouterr().out
    assert main(["report", str(run), str(tmp_path / "missing")]) == 2
    assert "ndvq report: error:" in capsys.readouterr().err
    assert main(["report", str(run), "--max-items", "0"]) == 2


def test_tune_bad_input_exit_2(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text("train: {max_steps: 2}\n")
    assert main(["tune", "-c", str(base), "--space", str(tmp_path / "none.yaml"), "--trials", "2",
                 "--study-dir", str(tmp_path / "s")]) == 2
    assert "space file" in capsys.readouterr().err
    space = tmp_path / "space.yaml"
    space.write_text("train.learnin_rate: {low: 1.0e-4, high: 1.0e-3, log: true}\n")
    assert main(["tune", "-c", str(base), "--space", str(space), "--trials", "2", "--study-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "train.learnin_rate" in err and "did you mean 'train.learning_rate'" in err
    assert main(["tune", "-c", str(base), "--space", str(space), "--trials", "0"]) == 2


def test_doctor_on_a_malformed_config_is_one_line_exit_2(tmp_path, capsys):
    run = write_run(tmp_path, "m", *scenario("healthy"))
    (run / "config.yaml").write_text("model: {n_codes: [unclosed\n")
    assert main(["doctor", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ndvq doctor: error: cannot read") and "config.yaml" in err
