"""Tracker backends (ndvq.run.trackers): JSONL, TensorBoard, wandb (offline) and MLflow (file store).

wandb and MLflow are optional extras: their tests are skipped with a reason when the package is absent.
Nothing here touches the network (``WANDB_MODE=offline``, an MLflow ``file:`` store in tmp_path).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest

from ndvq.config import load_config
from ndvq.errors import ConfigError
from ndvq.run.rundir import read_metrics
from ndvq.run.trackers import TRACKERS, Trackers, open_trackers

FINDINGS = [{"severity": "warning", "rule": "dead_codes", "title": "Most codes are dead", "observed": "90% dead",
             "cause": "...", "fixes": ["lower model.n_codes"]},
            {"severity": "info", "rule": "slow", "title": "Loss still falling", "observed": "-3% per 100 steps",
             "cause": "", "fixes": []}]


@pytest.fixture
def samples(tmp_path):
    """A PNG, a WAV and a file of another kind, as ``write_samples`` leaves them."""
    import soundfile
    from PIL import Image

    d = tmp_path / "samples" / "step0000010"
    d.mkdir(parents=True)
    Image.fromarray((np.arange(16 * 24 * 3) % 255).astype(np.uint8).reshape(16, 24, 3)).save(d / "reconstructions.png")
    soundfile.write(d / "item0_recon.wav", np.sin(np.linspace(0, 50, 800)).astype(np.float32), 8000)
    (d / "item0_recon.npy").write_bytes(b"\x93NUMPY")
    return sorted(d.iterdir())


def _log_all(tr: Trackers, samples) -> None:
    tr.log_config({"model": {"kind": "vqvae", "n_codes": 64}, "train": {"loggers": ["jsonl"]}})
    for step in (10, 20):
        tr.log_scalars("train", step, {"epoch": 0, "time": 1.5, "loss": 1.0 / step, "lr": 3e-4,
                                       "perplexity": float("nan")})
    tr.log_scalars("val", 20, {"epoch": 0, "recon_loss": 0.25, "psnr": 21.0})
    tr.log_media(20, samples)
    tr.log_findings(FINDINGS)


def test_loggers_key_keeps_jsonl_on():
    assert load_config(None, []).train.loggers == ["jsonl", "tensorboard"]
    assert load_config(None, ["train.loggers=[mlflow]"]).train.loggers == ["jsonl", "mlflow"]
    with pytest.raises(ConfigError, match="train.loggers"):
        load_config(None, ["train.loggers=[neptune]"])


def test_jsonl_and_tensorboard(tmp_path, samples):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    with open_trackers(["tensorboard"], run) as tr:
        assert list(tr.backends) == ["jsonl", "tensorboard"]
        _log_all(tr, samples)
    recs = read_metrics(run / "metrics.jsonl")
    assert [(r["split"], r["step"]) for r in recs] == [("train", 10), ("train", 20), ("val", 20)]
    assert recs[0]["loss"] == 0.1 and recs[0]["perplexity"] == "nan"  # JSON-safe, as MetricsLogger writes it
    assert json.loads((run / "doctor.json").read_text())["findings"][0]["rule"] == "dead_codes"
    ev = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "audio": 0, "tensors": 0}).Reload()
    tags = ev.Tags()
    assert {"train/loss", "train/lr", "val/recon_loss", "val/psnr"} <= set(tags["scalars"])
    assert "train/perplexity" not in tags["scalars"] and "train/epoch" not in tags["scalars"]
    assert [e.value for e in ev.Scalars("train/loss")] == pytest.approx([0.1, 0.05])
    assert tags["images"] == ["samples/reconstructions.png"] and tags["audio"] == ["samples/item0_recon.wav"]
    text = {t: ev.Tensors(t)[0].tensor_proto.string_val[0].decode() for t in tags["tensors"]}
    assert "Most codes are dead" in text["doctor/text_summary"] and "n_codes" in text["config/text_summary"]


def test_other_ranks_open_nothing(tmp_path):
    tr = open_trackers(["tensorboard", "wandb", "mlflow"], tmp_path / "run", enabled=False)
    tr.log_scalars("train", 1, {"loss": 1.0})
    tr.close()
    assert tr.backends == {} and not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_missing_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    with pytest.raises(ConfigError) as e:
        open_trackers(["tensorboard", name], tmp_path / "run")
    assert f'pip install "ndvq[{name}]"' in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown tracker"):
        open_trackers(["neptune"], tmp_path / "run")
    assert set(TRACKERS) == {"jsonl", "tensorboard", "wandb", "mlflow"}


# ------------------------------------------------------------------------------------------- wandb
def _wandb_payloads(path):
    """The record payloads of a ``.wandb`` file: a 7-byte header, then a LevelDB-style log of 32 KiB
    blocks, each chunk ``crc32 (4) | length (2, LE) | type (1: full, 2: first, 3: middle, 4: last)``."""
    data, block, out, part = path.read_bytes(), 32768, [], b""
    assert data[:4] == b":W&B"
    pos = 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        part = chunk if kind in (1, 2) else part + chunk
        if kind in (1, 4):
            out.append(part)
    return out


def _wandb_records(run_dir):
    """(history rows, summary items, config keys) read back from every offline ``.wandb`` file of a run."""
    from wandb.proto import wandb_internal_pb2

    def records(path):
        """The parsed records, once wandb's service has written the run's last (``exit``) record: it
        writes the file in the background and may still be at it when ``run.finish()`` returns."""
        for _ in range(300):
            recs = []
            for data in _wandb_payloads(path):
                recs.append(wandb_internal_pb2.Record())
                recs[-1].ParseFromString(data)
            if recs and recs[-1].WhichOneof("record_type") == "exit":
                return recs
            time.sleep(0.1)
        raise AssertionError(f"{path} has no exit record after 30 s")

    rows, summary, config = [], {}, set()
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        for rec in records(path):
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
            elif kind == "summary":
                summary.update({i.key or "/".join(i.nested_key): i.value_json for i in rec.summary.update})
            elif kind == "config":
                config |= {i.key for i in rec.config.update}
    return rows, summary, config


def test_wandb_offline(tmp_path, samples, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'ndvq[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "ndvq-test")
    run = tmp_path / "run"
    with open_trackers(["wandb"], run) as tr:
        _log_all(tr, samples)
    run_id = json.loads((run / "trackers.json").read_text())["wandb"]
    with open_trackers(["wandb"], run) as tr:  # a resume continues the same wandb run
        tr.log_scalars("train", 30, {"loss": 0.01})
    assert json.loads((run / "trackers.json").read_text())["wandb"] == run_id
    assert len(list((run / "wandb").glob(f"offline-run-*-{run_id}"))) == 2
    rows, summary, config = _wandb_records(run)
    losses = [(r["_step"], r["train/loss"]) for r in rows if "train/loss" in r]
    assert losses == [(10, pytest.approx(0.1)), (20, pytest.approx(0.05)), (30, pytest.approx(0.01))]
    assert any("val/psnr" in r for r in rows) and not any("train/perplexity" in r for r in rows)
    media = {k: v for r in rows for k, v in r.items() if k.endswith("/_type")}  # nested keys come flattened
    assert media == {"samples/reconstructions.png/_type": "image-file", "samples/item0_recon.wav/_type": "audio-file",
                     "doctor/_type": "table-file"}
    assert "Most codes are dead" in summary["doctor"] and {"model", "train"} <= config


# ------------------------------------------------------------------------------------------- MLflow
def test_mlflow_file_store(tmp_path, samples, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="mlflow not installed (pip install 'ndvq[mlflow]')")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # the default store is file:./mlruns
    run = tmp_path / "run"
    with open_trackers(["mlflow"], run) as tr:
        _log_all(tr, samples)
    run_id = json.loads((run / "trackers.json").read_text())["mlflow"]
    with open_trackers(["mlflow"], run) as tr:  # a resume continues the run; a changed config value is kept
        tr.log_config({"model": {"kind": "vqvae", "n_codes": 64}, "train": {"loggers": ["jsonl", "mlflow"]}})
        tr.log_scalars("train", 30, {"loss": 0.01})
    assert (tmp_path / "mlruns").is_dir()
    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    r = client.get_run(run_id)
    assert r.info.run_name == "run" and r.data.params["model.n_codes"] == "64"
    hist = [(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")]
    assert sorted(hist) == [(10, 0.1), (20, 0.05), (30, 0.01)]
    assert "train/perplexity" not in r.data.metrics and r.data.metrics["val/psnr"] == 21.0
    assert r.data.tags["doctor.worst"] == "warning: Most codes are dead"
    arts = {a.path for a in client.list_artifacts(run_id, "samples/step0000020")}
    assert arts == {f"samples/step0000020/{p.name}" for p in samples}
    local = client.download_artifacts(run_id, "doctor/findings.json", str(tmp_path))
    assert json.loads(open(local).read())["findings"][1]["rule"] == "slow"


# ------------------------------------------------------------------------------------------- in the loop
def _loop_opens_trackers() -> bool:
    import inspect

    from ndvq.run import train

    return "on_finish" in inspect.signature(train.train).parameters


@pytest.mark.skipif(not _loop_opens_trackers(), reason="the training loop does not open train.loggers yet "
                                                       "(integration of ndvq.run.trackers pending)")
def test_ndvq_train_logs_to_every_tracker(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ndvq.cli import main

    loggers = ["jsonl", "tensorboard"] + [m for m in ("wandb", "mlflow") if _installed(m)]
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    tiny = ["model.videogpt.n_hiddens=16", "model.videogpt.num_res_blocks=1", "model.embedding_dim=8",
            "model.n_codes=16", "model.videogpt.n_head=0", "model.videogpt.norm=group",
            "model.videogpt.norm_num_groups=8", "train.max_steps=4", "train.batch_size=2", "train.log_interval=1",
            "train.val_interval=2", "train.val_batches=1", "train.sample_interval=4", "train.doctor_warnings=false",
            "run.root=runs", "run.name=r", f"train.loggers=[{','.join(loggers)}]"]
    assert main(["train", *tiny]) == 0
    run = tmp_path / "runs" / "r"
    recs = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in recs if r["split"] == "train"] == [1, 2, 3, 4]
    assert json.loads((run / "doctor.json").read_text())["findings"]  # the doctor's findings at the end
    ev = EventAccumulator(str(run / "tb"), size_guidance={"images": 0}).Reload()
    assert len(ev.Scalars("train/loss")) == 4 and ev.Tags()["images"] == ["samples/reconstructions.png"]
    if "wandb" in loggers:
        rows, summary, config = _wandb_records(run)
        assert [r["_step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4] and "doctor" in summary
    if "mlflow" in loggers:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
        run_id = json.loads((run / "trackers.json").read_text())["mlflow"]
        assert len(client.get_metric_history(run_id, "train/loss")) == 4
        assert client.get_run(run_id).data.params["model.n_codes"] == "16"
        assert [a.path for a in client.list_artifacts(run_id, "samples/step0000004")] == [
            "samples/step0000004/reconstructions.png"]


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
