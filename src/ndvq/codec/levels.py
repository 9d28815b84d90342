"""Variable rate from one model: keep the first ``k`` levels of a residual quantizer (``--levels k``).

Residual levels are coded coarse to fine, and each level's codes depend only on the levels before it,
so the first ``k`` index columns of the full codes are exactly what a ``k``-level encoder gives; in the
token order of :mod:`ndvq.prior.layout` they are a prefix of every tile. Decoding sums the first ``k``
levels' code vectors (``ResidualVQ.lookup(indices, n_levels=k)``). Only a model trained with
``model.quantizer.quantizer_dropout > 0`` has learnt to decode from fewer levels; any other residual
model still decodes, at a lower quality than its level count suggests.

Example:
    >>> import torch
    >>> from ndvq.models import Autoencoder
    >>> m = Autoencoder(n_dims=1, in_channels=1, embedding_dim=4, n_codes=16, bottleneck="residual",
    ...                 videogpt={"n_hiddens": 8, "num_res_blocks": 1, "downsample": [4], "n_head": 0},
    ...                 quantizer={"num_quantizers": 3, "cosine": False}).eval()
    >>> k = check_levels(m, 2)
    >>> FirstLevels(m, k).decode(m.encode(torch.randn(1, 1, 16))[..., :k]).shape
    torch.Size([1, 1, 16])
"""

from __future__ import annotations

import torch

from ndvq import nd
from ndvq.errors import ConfigError
from ndvq.quantizers.residual import ResidualVQ

__all__ = ["check_levels", "FirstLevels", "residual_levels"]


def residual_levels(model) -> int | None:
    """Levels of the model's residual quantizer, or None when it has none (or is hierarchical)."""
    q = getattr(model, "quantizer", None)
    return q.n_codebooks if isinstance(q, ResidualVQ) and len(model.code_shapes((64,) * model.n_dims)) == 1 else None


def check_levels(model, levels: int | None) -> int | None:
    """``levels`` validated against the model (None: all); a one-line :class:`ConfigError` otherwise."""
    if levels is None:
        return None
    total = residual_levels(model)
    if total is None:
        q = getattr(model, "quantizer", None)
        what = f"has a {type(q).__name__} quantizer" if q is not None else f"is a {type(model).__name__}"
        raise ConfigError(f"--levels needs a single residual quantizer (model.bottleneck=residual); this model {what}")
    if not 1 <= int(levels) <= total:
        raise ConfigError(f"--levels must be in 1..{total} (the model's residual levels), got {levels}")
    return int(levels)


class FirstLevels:
    """A decoder view of ``model`` that reads only the first ``k`` residual levels ``[B, *L, k]``.

    Has what :func:`ndvq.run.infer.decode_whole` asks of a model: ``codebook_sizes``, ``code_shapes``
    and ``decode``.

    Args:
        model: an :class:`~ndvq.models.Autoencoder` with a :class:`ResidualVQ` bottleneck.
        k: levels kept (``1 <= k <= L``).
    """

    def __init__(self, model, k: int) -> None:
        self.model, self.k = model, int(k)
        self.codebook_sizes = tuple(model.codebook_sizes[:self.k])
        self.n_dims = model.n_dims

    def code_shapes(self, spatial) -> list[tuple[int, ...]]:
        """The model's code shapes with ``k`` index columns."""
        return [(*s[:-1], self.k) for s in self.model.code_shapes(spatial)]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, *L, k]`` -> reconstruction ``[B, C, *S]`` from the first ``k`` levels."""
        q = self.model.quantizer
        full = torch.zeros(*codes.shape[:-1], q.n_codebooks, dtype=torch.long, device=codes.device)
        full[..., :self.k] = codes.long()  # the other columns are never read (n_levels=k)
        z = q.lookup(full, n_levels=self.k)  # [B, *L, D]
        return self.model.backbone.decode(nd.channels_first(z))
