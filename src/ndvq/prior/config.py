"""The prior's own config: a flat pydantic model read from ``configs/prior.yaml`` plus ``key=value`` overrides.

Example:
    >>> cfg = load_prior_config(None, ["n_layers=2", "max_steps=10"])
    >>> cfg.n_layers, cfg.max_steps
    (2, 10)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ndvq.config.load import load_file
from ndvq.errors import ConfigError

__all__ = ["PriorConfig", "load_prior_config"]


class PriorConfig(BaseModel):
    """Architecture and training of the code prior (every key can be given as ``key=value``).

    Attributes:
        block: tile size in positions of the finest code grid per axis; null = the training item's latent
            shape (one tile per item). Default None.
        d_model: transformer width. Default 128.
        n_layers: transformer blocks. Default 3.
        n_heads: attention heads (``d_model`` must divide by it). Default 4.
        mlp_ratio: MLP hidden width / ``d_model``. Default 4.
        dropout: dropout in the residual branches. Default 0.0.
        max_steps: optimiser steps. Default 600.
        batch_size: tiles per step. Default 32.
        learning_rate: AdamW peak learning rate. Default 2e-3.
        weight_decay: AdamW weight decay. Default 0.01.
        warmup_steps: linear warm-up steps before the cosine decay. Default 50.
        grad_clip: gradient-norm clip (0 = off). Default 1.0.
        log_interval: steps between train records. Default 20.
        val_interval: steps between validations. Default 200.
        ckpt_interval: steps between checkpoints. Default 200.
        val_tiles: validation tiles (a fixed set). Default 256.
        max_items: items of each split encoded at start (the first ones). Default 4096.
        seed: seed of the weights and of the tile crops. Default 0.
        threads: torch intra-op threads while the prior trains (restored after); null = torch's default.
            Default 1: the prior's matrices are small; on this 2-core machine under load one thread ran a
            default step 3-5x faster than two.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    block: list[int] | None = None
    d_model: int = Field(128, ge=8)
    n_layers: int = Field(3, ge=1)
    n_heads: int = Field(4, ge=1)
    mlp_ratio: int = Field(4, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    max_steps: int = Field(600, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_steps: int = Field(50, ge=0)
    grad_clip: float = Field(1.0, ge=0.0)
    log_interval: int = Field(20, ge=1)
    val_interval: int = Field(200, ge=1)
    ckpt_interval: int = Field(200, ge=1)
    val_tiles: int = Field(256, ge=1)
    max_items: int = Field(4096, ge=1)
    seed: int = 0
    threads: int | None = Field(1, ge=1)

    def model_args(self) -> dict:
        """The architecture keys (what :class:`ndvq.prior.model.CodePrior` takes besides the code facts)."""
        return {k: getattr(self, k) for k in ("d_model", "n_layers", "n_heads", "mlp_ratio", "dropout")}


def validate_prior_config(data: dict) -> PriorConfig:
    """A dict -> :class:`PriorConfig`, or a one-line :class:`ConfigError` naming the first bad key."""
    unknown = sorted(set(data) - set(PriorConfig.model_fields))
    if unknown:
        raise ConfigError(f"unknown prior key {unknown[0]!r}; valid keys: {', '.join(PriorConfig.model_fields)}")
    try:
        cfg = PriorConfig(**data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"prior {key}={err.get('input')!r}: {err['msg']}") from None
    if cfg.d_model % cfg.n_heads:
        raise ConfigError(f"prior d_model={cfg.d_model} must be a multiple of n_heads={cfg.n_heads}")
    if cfg.block is not None and (not cfg.block or min(cfg.block) < 1):
        raise ConfigError(f"prior block={cfg.block} must be a list of positive sizes, one per latent axis")
    return cfg


def load_prior_config(path: str | Path | None, overrides: list[str] = ()) -> PriorConfig:
    """``configs/prior.yaml``-style file (None: the defaults) with ``key=value`` overrides applied.

    Args:
        path: YAML or JSON file of prior keys. Default None (every key at its default).
        overrides: ``["n_layers=2", "block=[4,4]"]`` (values are YAML; ``prior.n_layers=2`` also works).

    Raises:
        ConfigError: unreadable file, unknown key or bad value (one line).
    """
    data = load_file(path) if path is not None else {}
    data.update(prior_overrides(overrides))
    return validate_prior_config(data)


def prior_overrides(overrides: list[str]) -> dict:
    """``["n_layers=2", "prior.block=[4,4]"]`` -> ``{"n_layers": 2, "block": [4, 4]}``: values are YAML; a
    ``prior.`` prefix is allowed (the command line takes ``prior.KEY=value`` at any position)."""
    from ndvq.config import parse_overrides

    return {k.removeprefix("prior."): v for k, v in parse_overrides(list(overrides))}
