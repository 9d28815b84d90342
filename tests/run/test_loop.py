"""The training loop: exact resume, non-finite steps, no host syncs inside a step."""

from __future__ import annotations

import json
import os
import signal
import traceback

import pytest
import torch
from train_helpers import TINY

from ndvq import build
from ndvq.config import load_config
from ndvq.run import train as loop
from ndvq.run.checkpoint import load_checkpoint


def _train_losses(run_dir) -> list[tuple[int, float]]:
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if r["split"] == "train"]


def test_interrupted_and_resumed_matches_straight_run(tmp_path, tiny_data):
    over = TINY + [f"run.root={tmp_path}", "train.max_steps=9", "train.log_interval=1", "train.val_interval=4",
                   "train.ckpt_interval=100", "train.lr_schedule=cosine", "train.warmup_steps=2",
                   "model.dropout=0.1", "train.grad_accum=2"]  # 3 steps per epoch: resume crosses epochs
    straight = loop.train(load_config(None, over + ["run.name=straight"]))

    def interrupt(step, metrics):  # a real SIGINT in the middle of the run
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    first = loop.train(load_config(None, over + ["run.name=resumed"]), on_validation=interrupt)
    assert first.stopped == "interrupted" and first.step == 4
    assert load_checkpoint(first.run_dir)["state"]["step"] == 4
    resumed = loop.train(load_config(first.run_dir / "config.yaml"), resume=first.run_dir)
    assert resumed.stopped == "finished" and resumed.step == 9
    a, b = _train_losses(straight.run_dir), _train_losses(resumed.run_dir)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 10))
    assert [v for _, v in b] == pytest.approx([v for _, v in a], rel=1e-5, abs=1e-7)
    sa, sb = load_checkpoint(straight.run_dir)["model"], load_checkpoint(resumed.run_dir)["model"]
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), rtol=1e-5, atol=1e-6), k


def test_a_config_naming_no_schedule_keeps_the_rate_and_delivers_the_weight_average(tmp_path, tiny_data):
    """The default schedule (constant, with train.weight_ema 0.99, since 2026-12-03; cosine the day before): the
    logged rate stays at the learning rate, and the checkpoint's model is the average of every step's weights
    (the trained weights ride along as train_model)."""
    own = tmp_path / "own.yaml"  # a user's config: the built-in run's (no argument) names its schedule
    own.write_text("model: {kind: vqvae, n_dims: 2, in_channels: 3}\ntrain: {max_steps: 6, learning_rate: 1.0e-3}\n")
    over = TINY + [f"run.root={tmp_path}", "run.name=default", "train.log_interval=1", "train.val_interval=100",
                   "train.ckpt_interval=100"]
    cfg = load_config(own, over)
    assert "lr_schedule" not in own.read_text() and "weight_ema" not in own.read_text()
    assert cfg.train.warmup_steps == 0 and cfg.train.weight_ema == 0.99
    run_dir = loop.train(cfg).run_dir
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in recs if r["split"] == "train"]
    assert lrs == [pytest.approx(1e-3)] * 6, lrs
    ckpt = load_checkpoint(run_dir)
    assert ckpt["state"]["weight_ema_updates"] == 6 and "train_model" in ckpt
    weights = [k for k, v in ckpt["model"].items() if v.is_floating_point() and "weight" in k]
    assert any(not torch.equal(ckpt["model"][k], ckpt["train_model"][k]) for k in weights)  # an average


def test_weight_average_is_delivered_and_resumes_exactly(tmp_path, tiny_data):
    """train.weight_ema: checkpoints' "model" (what eval/encode/export load) is the moving average, the trained
    weights ride along for --resume, and an interrupted + resumed run ends with the straight run's average."""
    from ndvq.run.checkpoint import load_model

    over = TINY + [f"run.root={tmp_path}", "train.max_steps=9", "train.log_interval=1", "train.val_interval=4",
                   "train.ckpt_interval=100", "train.weight_ema=0.8"]
    one = load_checkpoint(loop.train(load_config(None, over + ["run.name=one", "train.max_steps=1"])).run_dir)
    for k, v in one["model"].items():  # the first update copies the weights
        assert torch.equal(v, one["train_model"][k]), k
    straight = loop.train(load_config(None, over + ["run.name=straight"]))

    def interrupt(step, metrics):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    first = loop.train(load_config(None, over + ["run.name=resumed"]), on_validation=interrupt)
    assert first.stopped == "interrupted" and load_checkpoint(first.run_dir)["state"]["weight_ema_updates"] == 4
    loop.train(load_config(first.run_dir / "config.yaml"), resume=first.run_dir)
    a, b = load_checkpoint(straight.run_dir), load_checkpoint(first.run_dir)
    assert a["state"]["weight_ema_updates"] == b["state"]["weight_ema_updates"] == 9
    weights = [k for k, v in a["model"].items() if v.is_floating_point() and "weight" in k]
    assert any(not torch.allclose(a["model"][k], a["train_model"][k]) for k in weights)  # an average, not a copy
    for key in ("model", "train_model"):
        for k in a[key]:
            assert torch.allclose(a[key][k].float(), b[key][k].float(), rtol=1e-5, atol=1e-6), (key, k)
    loaded = load_model(straight.run_dir).model.state_dict()
    assert all(torch.equal(loaded[k], a["model"][k]) for k in weights)
    plain = load_checkpoint(loop.train(load_config(None, over[:-1] + ["run.name=plain", "train.max_steps=2",
                                                                       "train.weight_ema=null"])).run_dir)
    assert "train_model" not in plain and plain["state"]["weight_ema_updates"] == 0


def _poison(monkeypatch, bad_steps):
    """Make the model's loss NaN on the given (1-based) forward calls."""
    make = build.build_model

    def build_model(cfg):
        net = make(cfg)
        forward, calls = net.forward, [0]

        def poisoned(x):
            out = forward(x)
            if net.training:
                calls[0] += 1
                if calls[0] in bad_steps:
                    out.reconstruction = out.reconstruction * float("nan")
            return out

        net.forward = poisoned
        return net

    monkeypatch.setattr(build, "build_model", build_model)


def test_nonfinite_step_is_skipped_and_counted(tmp_path, tiny_data, monkeypatch, capsys):
    _poison(monkeypatch, {3})
    res = loop.train(load_config(None, TINY + [f"run.root={tmp_path}", "run.name=r", "train.max_steps=6",
                                               "train.log_interval=3", "train.val_interval=100"]))
    recs = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["split"] == "train"]
    assert [r["nonfinite_steps"] for r in train] == [1, 1]
    assert isinstance(train[-1]["loss"], float)  # finite again after the skipped step
    assert "skipped" in capsys.readouterr().err


def test_consecutive_nonfinite_steps_stop_with_last_good_checkpoint(tmp_path, tiny_data, monkeypatch):
    _poison(monkeypatch, set(range(5, 100)))
    cfg = load_config(None, TINY + [f"run.root={tmp_path}", "run.name=r", "train.max_steps=30", "train.log_interval=2",
                                    "train.ckpt_interval=2", "train.val_interval=100", "train.max_nonfinite_steps=3"])
    with pytest.raises(loop.NonFiniteLossError, match="3 consecutive steps"):
        loop.train(cfg)
    ckpt = load_checkpoint(tmp_path / "r")
    assert ckpt["state"]["step"] == 4  # saved before the first bad step, never overwritten
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_no_host_sync_inside_a_step(tmp_path, tiny_data, monkeypatch):
    """Count Tensor.item/tolist/cpu/numpy/__bool__/__float__/__int__ calls made by the loop's own code
    (loop, optimiser, Fabric, tracker update) during training steps 2..6. Syncs made inside the model
    and quantizer (their own input checks) are the model's business and are not counted here."""
    calls: list[str] = []
    state = {"in_step": False, "step": 0}
    own = ("/ndvq/models/", "/ndvq/quantizers/vq.py", "/ndvq/quantizers/search.py")

    def from_model() -> bool:
        return any(any(o in f.filename for o in own) for f in traceback.extract_stack())

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        orig = getattr(torch.Tensor, name)

        def spy(self, *a, _orig=orig, _name=name, **k):
            if state["in_step"] and state["step"] >= 2 and not from_model():
                calls.append(_name + " @ " + " <- ".join(f"{f.filename.split('/')[-1]}:{f.lineno}"
                                                          for f in traceback.extract_stack()[-4:-1]))
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    step_fn = loop.train_step

    def watched(*a, **k):
        state["step"] += 1
        state["in_step"] = True
        try:
            return step_fn(*a, **k)
        finally:
            state["in_step"] = False

    monkeypatch.setattr(loop, "train_step", watched)
    track = loop._tracker

    def build_tracker(session, counts):  # the tracker update runs every step too
        tr = track(session, counts)
        if tr is not None:
            upd = tr.update

            def update(c):
                state["in_step"] = True
                try:
                    return upd(c)
                finally:
                    state["in_step"] = False

            tr.update = update
        return tr

    monkeypatch.setattr(loop, "_tracker", build_tracker)
    loop.train(load_config(None, TINY + [f"run.root={tmp_path}", "run.name=r", "train.max_steps=6",
                                         "train.log_interval=3", "train.val_interval=100"]))
    assert state["step"] == 6
    assert calls == [], f"host syncs inside training steps: {calls}"


@pytest.mark.parametrize("kind, extra", [
    ("hierarchical", ["model.videogpt.downsample=[2,2]", "model.top.downsample=[2,2]"]),
    ("klvae", ["model.ldm.channels=[8,16]", "model.ldm.attention_levels=[false,false]",
               "model.ldm.norm_num_groups=4", "model.ldm.num_res_blocks=1", "model.embedding_dim=2",
               "loss.adversarial_weight=0.1", "loss.disc_channels=8", "loss.disc_layers=2",
               "loss.adversarial_warmup_epochs=1"]),
])
def test_other_model_kinds_train_and_resume(tmp_path, tiny_data, kind, extra):
    over = TINY + extra + [f"model.kind={kind}", f"run.root={tmp_path}", "run.name=r", "train.max_steps=8",
                           "train.log_interval=2", "train.val_interval=4"]  # 6 steps/epoch: disc on at epoch 1
    res = loop.train(load_config(None, over))
    recs = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["split"] == "train"]
    assert all(isinstance(r["loss"], float) for r in train)
    ckpt = load_checkpoint(res.run_dir)
    assert ckpt["model_class"] == {"hierarchical": "HierarchicalAutoencoder", "klvae": "Autoencoder"}[kind]
    if kind == "klvae":
        assert "kl_loss" in train[-1] and "disc_loss" in train[-1] and "discriminator" in ckpt
        assert "disc_loss" not in train[0]  # discriminator off during the warm-up epoch
    else:
        assert "window_usage" in train[-1]
    res2 = loop.train(load_config(res.run_dir / "config.yaml", ["train.max_steps=10"]), resume=res.run_dir)
    assert res2.step == 10


def test_epoch_based_validation_and_num_epochs(tmp_path, tiny_data):
    """train.val_every_epochs (medical val_interval) and train.num_epochs: 24 items / batch 4 = 6 steps per epoch."""
    res = loop.train(load_config(None, TINY + [f"run.root={tmp_path}", "run.name=r", "train.max_steps=null",
                                               "train.num_epochs=2", "train.val_every_epochs=1", "train.log_interval=3"]))
    recs = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert res.step == 12 and [r["step"] for r in recs if r["split"] == "val"] == [6, 12]
    assert sorted(p.name for p in (res.run_dir / "checkpoints").iterdir()) == [
        "best-step0000006.ckpt", "best-step0000012.ckpt", "last.ckpt"]
