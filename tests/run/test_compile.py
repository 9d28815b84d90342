"""``train.compile=true``: a compiled run trains, reports the compile step's time and resumes like eager.

The compiler backend is ``aot_eager`` here (Dynamo capture + AOTAutograd graphs: the parts that break
on graph breaks, host syncs or data-dependent shapes); inductor's C++ code generation on top takes
minutes on a busy 2-core CPU (docs/benchmarks.md, "Compilation and the machine's limit").
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from train_helpers import TINY

from ndvq import build
from ndvq.config import load_config
from ndvq.run import train as loop


@pytest.fixture
def aot_eager(monkeypatch):
    """``torch.compile`` with the ``aot_eager`` backend, counting the models it wraps."""
    wrapped = []
    compile_ = torch.compile

    def fake(model, **kwargs):
        wrapped.append(model)
        return compile_(model, **{"backend": "aot_eager", **kwargs})

    monkeypatch.setattr(torch, "compile", functools.wraps(compile_)(fake))
    torch._dynamo.reset()
    yield wrapped
    torch._dynamo.reset()


def _losses(run_dir) -> list[float]:
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if r["split"] == "train"]


def test_compiled_run_trains_reports_compile_time_and_resumes(tmp_path, tiny_data, aot_eager, capsys, monkeypatch):
    monkeypatch.setattr(build, "fit_items", lambda *args: None)  # TinyImages has no padding to fit
    over = TINY + [f"run.root={tmp_path}", "train.max_steps=4", "train.log_interval=1", "train.val_interval=2",
                   "train.ckpt_interval=2", "train.accelerator=cpu"]
    eager = loop.train(load_config(None, over + ["run.name=eager"]))
    capsys.readouterr()
    first = loop.train(load_config(None, over + ["run.name=compiled", "train.compile=true", "train.max_steps=2"]))
    out = capsys.readouterr()
    n_compiled = len(aot_eager)  # Fabric unwraps the compiled model and compiles its own wrapper again
    assert n_compiled >= 1 and first.step == 2
    assert "torch.compile (train.compile=true)" in out.out  # the start summary says the first step compiles
    assert "step 1/2 done in" in out.err and "torch.compile time included" in out.err
    resumed = loop.train(load_config(first.run_dir / "config.yaml", ["train.max_steps=4"]), resume=first.run_dir)
    assert resumed.stopped == "finished" and resumed.step == 4 and len(aot_eager) > n_compiled
    assert "step 3/4 done in" in capsys.readouterr().err  # a resumed session compiles again, and says so
    assert _losses(resumed.run_dir) == pytest.approx(_losses(eager.run_dir), rel=1e-4, abs=1e-6)
