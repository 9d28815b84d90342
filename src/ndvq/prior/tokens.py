"""``PriorTokenModel``: the trained prior as the codec's :class:`~ndvq.prior.layout.TokenModel`, bit-reproducible.

Guarantee: the same tokens give bit-identical probabilities in any process on the same platform and torch
build, whatever ``torch.set_num_threads`` says: every call runs the prior single-threaded
(:func:`single_thread`, which restores the caller's thread count), always through the incremental
key/value-cache path with batch 1, on the CPU in float32, and the softmax is taken in float64 (NumPy) from
the float32 logits. Across CPUs, operating systems or torch versions the float32 logits may differ in their
last bits, so files coded under the prior are only guaranteed to decode on the platform that wrote them.

Example:
    >>> tm, info = load_token_model("runs/my-run")            # doctest: +SKIP
    >>> tm.start(layout_for(model, (32, 32), info["block"]).tiles[0]); p = tm.probabilities()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ndvq.prior.layout import Tile, TokenModel
from ndvq.prior.model import CodePrior, KVCache, TileMeta
from ndvq.prior.store import load_prior

__all__ = ["PriorTokenModel", "load_token_model", "single_thread", "num_threads"]


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run torch on ``n`` intra-op threads inside the block (None: unchanged); the previous count is restored."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def single_thread() -> contextlib.AbstractContextManager:
    """Run torch on one intra-op thread inside the block; the previous thread count is restored after it."""
    return num_threads(1)


def softmax64(logits: torch.Tensor, n: int) -> np.ndarray:
    """float64 softmax of the first ``n`` float32 logits (1-D), computed in NumPy."""
    z = logits[:n].detach().cpu().numpy().astype(np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


class PriorTokenModel:
    """A trained :class:`CodePrior` behind the :class:`TokenModel` protocol (start / probabilities / push).

    Args:
        prior: the prior (moved to the CPU, eval mode).
    """

    def __init__(self, prior: CodePrior):
        self.prior = prior.cpu().eval()
        self._meta: TileMeta | None = None
        self._cache: KVCache | None = None
        self._prev: torch.Tensor | None = None
        self._probs: np.ndarray | None = None

    def start(self, tile: Tile) -> None:
        """Begin a tile (ValueError when it does not fit the prior's position tables)."""
        self._meta = TileMeta.of(tile)
        self.prior.check_tile(self._meta)
        self._cache = self.prior.new_cache(1, tile.length)
        self._prev, self._probs = None, None

    @torch.no_grad()
    def probabilities(self) -> np.ndarray:
        """float64 distribution of the next token over its own vocabulary (sums to 1)."""
        if self._meta is None:
            raise RuntimeError("call start(tile) first")
        if self._probs is None:
            i = self._cache.size
            if i >= self._meta.length:
                raise RuntimeError("every token of the tile was already pushed")
            with single_thread():
                logits = self.prior.step(self._prev, self._meta, self._cache)[0]
            self._probs = softmax64(logits, int(self._meta.vocab[i]))
        return self._probs

    def push(self, token: int) -> None:
        """Append the token that was coded (its distribution is computed first if it was not asked for)."""
        if self._probs is None:
            self.probabilities()
        self._prev, self._probs = torch.tensor([int(token)]), None


def load_token_model(run_dir: str | Path) -> tuple[TokenModel, dict] | None:
    """The run's trained prior as a :class:`TokenModel` and its facts, or None when ``RUN/prior`` has none.

    The dict holds ``block`` (tile size in finest-grid positions, for ``layout_for``), ``fingerprint``
    (16 hex digits over the prior's config and weights), ``codebook_sizes``, ``n_grids``, ``max_coords``,
    ``item_spatial`` and ``prior`` (its config).
    """
    loaded = load_prior(run_dir)
    if loaded is None:
        return None
    prior, facts = loaded
    return PriorTokenModel(prior), facts
