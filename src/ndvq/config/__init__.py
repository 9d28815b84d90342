"""The configuration: schema (pydantic), old key names, loading and the medical ``vae_config.json``.

=================  ==========================================================================
module             holds
=================  ==========================================================================
``schema``         the sections (:class:`Config`, :class:`ModelConfig`, ...), :func:`all_keys`,
                   :func:`schema_markdown`; every value check
``aliases``        the old key names (``model.n_hiddens`` -> ``model.videogpt.n_hiddens``, ...)
``validate``       dict -> :class:`Config` with one-line errors (:func:`validate_config`)
``load``           files, ``key=value`` overrides, :data:`QUICKSTART`, :func:`load_config`, dumping
``medical``        the medical ``vae_config.json`` converter (:func:`from_medical`)
=================  ==========================================================================

Example:
    >>> from ndvq.config import load_config
    >>> cfg = load_config(None, ["model.kind=klvae", "model.embedding_dim=8"])
    >>> cfg.model.backbone, cfg.model.bottleneck, cfg.model.embedding_dim
    ('ldm', 'gaussian', 8)
"""

from __future__ import annotations

from ndvq.config.load import (
    QUICKSTART,
    apply_overrides,
    config_to_dict,
    config_to_yaml,
    flatten_keys,
    load_config,
    parse_overrides,
)
from ndvq.config.schema import (
    Config,
    DataConfig,
    HierarchicalConfig,
    LDMConfig,
    LossConfig,
    ModelConfig,
    QuantizerConfig,
    RunConfig,
    TrainConfig,
    VideoGPTConfig,
    all_keys,
    schema_markdown,
)
from ndvq.config.validate import validate_config
from ndvq.errors import ConfigError

__all__ = [
    "flatten_keys",
    "Config",
    "ModelConfig",
    "VideoGPTConfig",
    "LDMConfig",
    "QuantizerConfig",
    "HierarchicalConfig",
    "DataConfig",
    "TrainConfig",
    "LossConfig",
    "RunConfig",
    "ConfigError",
    "QUICKSTART",
    "load_config",
    "parse_overrides",
    "apply_overrides",
    "validate_config",
    "config_to_dict",
    "config_to_yaml",
    "all_keys",
    "schema_markdown",
]
