"""PriorTokenModel: the codec's contract, bit-identical probabilities in a fresh process with other thread counts."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from priorkit import PRIOR

from ndvq.prior.layout import layout_for
from ndvq.prior.model import TileMeta
from ndvq.prior.tokens import load_token_model
from ndvq.prior.train import load_codes_model, train_prior

SCRIPT = """
import hashlib, sys, torch
torch.set_num_threads(int(sys.argv[2]))
from ndvq.prior.layout import layout_for
from ndvq.prior.tokens import load_token_model
from ndvq.run.checkpoint import load_model
tm, info = load_token_model(sys.argv[1])
model = load_model(sys.argv[1]).model
lay = layout_for(model, (32, 16), info["block"])
h = hashlib.sha256()
for tile in lay.tiles:
    tm.start(tile)
    for i in range(tile.length):
        p = tm.probabilities()
        h.update(p.tobytes())
        tm.push((7 * i + 3) % len(p))
assert torch.get_num_threads() == int(sys.argv[2])
print(info["fingerprint"], h.hexdigest())
"""


@pytest.fixture(scope="module")
def trained(image_run):
    train_prior(image_run, overrides=[*PRIOR, "max_steps=3"], overwrite=True)
    return image_run


def _digest(run: Path, threads: int) -> str:
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(run), str(threads)], capture_output=True, text=True,
                         env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": str(threads)},
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_probabilities_are_bit_identical_across_processes_and_thread_counts(trained):
    assert _digest(trained, 1) == _digest(trained, 2)


def test_contract_and_the_full_forward(trained):
    tm, info = load_token_model(trained)
    model = load_codes_model(trained).model
    tile = layout_for(model, tuple(info["item_spatial"]), info["block"]).tiles[0]
    tokens = torch.as_tensor([(5 * i + 1) % int(k) for i, k in enumerate(tile.vocab)])
    torch.set_num_threads(2)
    try:
        tm.start(tile)
        probs = []
        for t in tokens.tolist():
            probs.append(tm.probabilities())
            tm.push(t)
        assert torch.get_num_threads() == 2  # restored after each call
    finally:
        torch.set_num_threads(1)
    assert all(p.dtype == np.float64 and len(p) == k and abs(p.sum() - 1) < 1e-12 for p, k in zip(probs, tile.vocab))
    with torch.no_grad():
        full = tm.prior(tokens[None], TileMeta.of(tile))[0].double().softmax(-1).numpy()
    assert np.allclose(np.stack(probs), full[:, :len(probs[0])], atol=1e-5)


def test_same_codes_same_bits_in_one_process(trained):
    tm, info = load_token_model(trained)
    tile = layout_for(load_codes_model(trained).model, tuple(info["item_spatial"]), info["block"]).tiles[0]

    def run() -> str:
        h = hashlib.sha256()
        tm.start(tile)
        for i in range(tile.length):
            h.update(tm.probabilities().tobytes())
            tm.push(i % 3)
        return h.hexdigest()

    assert run() == run()
    assert load_token_model(trained)[1]["fingerprint"] == info["fingerprint"]
