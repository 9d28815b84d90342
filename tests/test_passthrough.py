"""Config sections pass straight through: every section's field names ARE its constructor's parameters.

Adding a knob = one schema field + one constructor argument; this test fails when only one of them is added.
"""

from __future__ import annotations

import inspect

import pytest

from ndvq.config import (
    Config,
    DataConfig,
    LDMConfig,
    LossConfig,
    ModelConfig,
    QuantizerConfig,
    VideoGPTConfig,
    load_config,
)

# what the composing model supplies to a backbone (not configuration): dimensions and channels come from
# model.*, latent_channels from the bottleneck, condition_channels from the two-level (hierarchical) model
BACKBONE_GIVEN = {"n_dims", "in_channels", "out_channels", "embedding_dim", "latent_channels", "condition_channels"}


def params(fn) -> set[str]:
    """Keyword parameter names of a callable (a class: of its ``__init__``), without self/*args/**kwargs."""
    sig = inspect.signature(fn)
    return {n for n, p in sig.parameters.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def fields(section) -> set[str]:
    return set(section.model_fields)


def test_model_section_is_the_autoencoder():
    from ndvq.models import Autoencoder

    assert fields(ModelConfig) - {"kind", "top"} == params(Autoencoder)


def test_model_section_is_the_hierarchical_autoencoder():
    from ndvq.models import HierarchicalAutoencoder

    assert fields(ModelConfig) - {"kind"} == params(HierarchicalAutoencoder)


def test_videogpt_section_is_the_backbone():
    from ndvq.models.backbones import VideoGPTBackbone

    assert fields(VideoGPTConfig) == params(VideoGPTBackbone) - BACKBONE_GIVEN


def test_ldm_section_is_the_backbone():
    from ndvq.models.backbones import LDMBackbone

    assert fields(LDMConfig) == params(LDMBackbone) - BACKBONE_GIVEN


def test_quantizer_section_is_what_build_quantizer_accepts():
    from ndvq.quantizers import ALL_OPTIONS, build_quantizer

    assert {"beta", "ema_decay"} <= params(build_quantizer)
    assert fields(QuantizerConfig) == set(ALL_OPTIONS) | {"beta", "ema_decay"}


def test_loss_section_is_the_objective():
    from ndvq.objectives import Objective

    assert fields(LossConfig) - {"disc_learning_rate"} == params(Objective) - {"n_dims", "in_channels"}


def test_data_section_is_create_dataset():
    from ndvq.data import create_dataset
    from ndvq.data.shards import SHARD_FIELDS

    assert fields(DataConfig) - set(SHARD_FIELDS) == params(create_dataset) - {"split", "pad_multiple", "stats_dir"}
    sig = inspect.signature(create_dataset).parameters
    for name, field in DataConfig.model_fields.items():  # same defaults: a bare call == the schema's defaults
        if name not in SHARD_FIELDS:  # the shard fields go to ndvq.data.shards (their own test)
            assert sig[name].default == field.get_default(call_default_factory=True), name


@pytest.mark.parametrize("kind", ["samples", "image", "video", "audio", "series", "volume"])
def test_each_dataset_gets_exactly_its_own_options(kind):
    from ndvq.data import DATASETS, KIND_OPTIONS

    class_only = {"split", "index_path", "cache_mb"}  # split is create_dataset's own; the others not configurable
    assert set(KIND_OPTIONS[kind]) == params(DATASETS[kind]) - class_only


def test_sections_build_objects():
    """``Class(**section.model_dump())`` works for the default config and a VQGAN-style one."""
    from ndvq.models import Autoencoder, HierarchicalAutoencoder
    from ndvq.objectives import Objective

    for overrides in ([], ["model.backbone=ldm", "model.ldm.channels=[32,32]", "model.ldm.attention_levels=[false,false]"]):
        cfg = load_config(None, overrides)
        model = Autoencoder(**cfg.model.model_dump(exclude={"kind", "top"}))
        assert model.codebook_sizes == (cfg.model.n_codes,)
    cfg = load_config(None, ["model.kind=hierarchical", "model.videogpt.downsample=[2,2]"])
    assert len(HierarchicalAutoencoder(**cfg.model.model_dump(exclude={"kind"})).codebook_sizes) == 2
    cfg = Config()
    Objective(**cfg.loss.model_dump(exclude={"disc_learning_rate"}), n_dims=2, in_channels=3)
