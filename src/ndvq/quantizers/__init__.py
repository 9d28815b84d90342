"""Quantizers: tokens ``[..., D]`` in, :class:`QuantizerOutput` out.

``build_quantizer(kind, dim, n_codes, beta, ema_decay, **options)`` is the one entry point the
models use; ``options`` are the ``QuantizerConfig`` fields other than ``kind`` (each quantizer
takes the ones that apply to it and ignores the rest). See docs/quantizers.md.

Example:
    >>> import torch
    >>> from ndvq.quantizers import build_quantizer
    >>> q = build_quantizer("vq", dim=64, n_codes=512)
    >>> out = q(torch.randn(4, 16, 16, 64))
    >>> out.indices.shape
    torch.Size([4, 16, 16])
"""

from __future__ import annotations

import inspect
import warnings

from ndvq.errors import ConfigError

from .base import Quantizer, QuantizerOutput, all_reduce_, is_distributed, usage_from_counts
from .fsq import FSQ
from .grouped import GroupedVQ
from .lfq import LFQ
from .residual import ResidualVQ
from .simvq import SimVQ
from .usage import CodeUsageTracker
from .vq import VectorQuantizer

__all__ = [
    "default_beta",
    "Quantizer",
    "QuantizerOutput",
    "VectorQuantizer",
    "FSQ",
    "LFQ",
    "SimVQ",
    "ResidualVQ",
    "GroupedVQ",
    "CodeUsageTracker",
    "build_quantizer",
    "QUANTIZER_KINDS",
    "VQ_OPTIONS",
    "all_reduce_",
    "is_distributed",
    "usage_from_counts",
]

QUANTIZER_KINDS = ("vq", "fsq", "lfq", "simvq", "residual", "grouped")
_CLASSES = dict(zip(QUANTIZER_KINDS, (VectorQuantizer, FSQ, LFQ, SimVQ, ResidualVQ, GroupedVQ)))  # kind -> class

#: Options of the vector quantizer (also passed to each level/group of residual and grouped).
VQ_OPTIONS = (
    "update", "codebook_lr", "init", "kmeans_iters", "kmeans_batches", "restart", "restart_interval",
    "restart_share", "restart_threshold", "restart_sampling", "replay_size", "ema_accumulate_steps",
    "ema_tokens_per_code", "entropy_weight", "cosine",
    "codebook_dim", "rotation_trick", "sample_temperature", "grow_to", "grow_at_step",
    "entropy_temperature", "chunk_rows",
)
#: Every option name ``build_quantizer`` accepts (== QuantizerConfig fields other than ``kind``, plus
#: two constructor-only VQ knobs ``entropy_temperature`` and ``chunk_rows``).
ALL_OPTIONS = VQ_OPTIONS + (
    "num_quantizers", "quantizer_dropout", "groups", "fsq_levels", "lfq_entropy_weight", "lfq_diversity_gamma",
)
#: Old option names still accepted (with a DeprecationWarning) -> their current names.
OPTION_ALIASES = {"levels": "fsq_levels"}


def _pick(options: dict, names) -> dict:
    return {k: v for k, v in options.items() if k in names}


def _rename_aliases(options: dict) -> dict:
    """Old option names (:data:`OPTION_ALIASES`) -> current ones, with a DeprecationWarning."""
    options = dict(options)
    for old, new in OPTION_ALIASES.items():
        if old in options:
            if new in options:
                raise TypeError(f"build_quantizer got both {old!r} and its new name {new!r}; pass only {new!r}")
            warnings.warn(f"quantizer option {old!r} is deprecated; use {new!r}", DeprecationWarning, stacklevel=3)
            options[new] = options.pop(old)
    return options


def default_beta(kind: str) -> float | None:
    """The commitment weight a quantizer ``kind`` uses when none is given: its class's own default
    (None for ``fsq``, which has no commitment loss)."""
    if kind not in _CLASSES:
        raise ConfigError(f"quantizer kind must be one of {QUANTIZER_KINDS}, got {kind!r}")
    param = inspect.signature(_CLASSES[kind]).parameters.get("beta")
    return None if param is None else param.default


def build_quantizer(kind: str, dim: int, n_codes: int, beta: float | None = None, ema_decay: float = 0.99,
                    **options) -> Quantizer:
    """Build a quantizer by name.

    Args:
        kind: ``"vq"`` (default VQ), ``"fsq"``, ``"lfq"``, ``"simvq"``, ``"residual"`` or ``"grouped"``.
        dim: token dimension ``D``.
        n_codes: codes per codebook (ignored by ``fsq``, whose size is ``prod(fsq_levels)``; for ``lfq``
            a power of two, ``2**bits``; for ``grouped`` the codes per group).
        beta: commitment weight; None means the kind's own default (:func:`default_beta`: 0.5 for
            ``vq``, 0.25 for ``lfq``, ``simvq``, ``residual``, ``grouped``). Default None.
        ema_decay: EMA decay for EMA-updated codebooks. Default 0.99.
        **options: ``QuantizerConfig`` fields other than ``kind`` (see :data:`ALL_OPTIONS`), e.g.
            ``fsq_levels=[8, 5, 5, 5]`` for ``fsq`` (the old name ``levels`` still works, with a
            ``DeprecationWarning``).

    Raises:
        ConfigError: unknown ``kind``. TypeError: unknown option name.
    """
    options = _rename_aliases(options)
    unknown = sorted(set(options) - set(ALL_OPTIONS))
    if unknown:
        raise TypeError(f"build_quantizer got unknown options {unknown}; expected a subset of {sorted(ALL_OPTIONS)}")
    vq_opts = _pick(options, VQ_OPTIONS)
    beta = default_beta(kind) if beta is None else beta
    if kind == "vq":
        return VectorQuantizer(dim, n_codes, beta=beta, ema_decay=ema_decay, **vq_opts)
    if kind == "fsq":
        return FSQ(dim, **({"levels": options["fsq_levels"]} if "fsq_levels" in options else {}))
    if kind == "lfq":
        return LFQ(dim, n_codes, beta=beta, entropy_weight=options.get("lfq_entropy_weight", 0.1),
                   diversity_gamma=options.get("lfq_diversity_gamma", 1.0))
    if kind == "simvq":
        return SimVQ(dim, n_codes, beta=beta, **_pick(options, ("codebook_lr", "rotation_trick", "chunk_rows")))
    if kind == "residual":
        return ResidualVQ(dim, n_codes, beta=beta, ema_decay=ema_decay,
                          **_pick(options, ("num_quantizers", "quantizer_dropout")), **vq_opts)
    if kind == "grouped":
        return GroupedVQ(dim, n_codes, beta=beta, ema_decay=ema_decay, **_pick(options, ("groups",)), **vq_opts)
    raise ConfigError(f"quantizer kind must be one of {QUANTIZER_KINDS}, got {kind!r}")
