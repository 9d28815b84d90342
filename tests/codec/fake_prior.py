"""A small deterministic, context-dependent TokenModel standing in for the trained prior in the codec tests."""

from __future__ import annotations

import numpy as np

import ndvq.prior


class FakePrior:
    """The next token's distribution depends on the previous token, the column and the position in the tile."""

    def start(self, tile):
        self.tile, self.i, self.prev = tile, 0, 0

    def probabilities(self):
        n = int(self.tile.vocab[self.i])
        w = np.exp(-((np.arange(n) - (3 * self.prev + int(self.tile.column[self.i]) + self.i) % n) ** 2) / 4.0)
        return (w + 1e-3) / (w + 1e-3).sum()

    def push(self, token):
        self.prev, self.i = int(token), self.i + 1


def load_token_model(run_dir, fingerprint: str = "fake0001", block=(8, 8)):
    """What ``ndvq.prior.load_token_model`` returns for a run with a prior."""
    return FakePrior(), {"block": None if block is None else list(block), "fingerprint": fingerprint}


def install() -> None:
    """Make ``ndvq.prior.load_token_model`` return the fake (in a subprocess; tests use monkeypatch)."""
    ndvq.prior.load_token_model = load_token_model
