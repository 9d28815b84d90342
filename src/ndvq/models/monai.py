"""State dicts of MONAI's ``AutoencoderKL`` <-> ndvq's ``KLVAE`` (LDM backbone x Gaussian bottleneck).

The two networks are the same layer for layer (:mod:`ndvq.models.backbones.ldm`); only the names
differ. :func:`monai_key_map` walks an ndvq model and names every parameter as MONAI does
(``monai.networks.nets.AutoencoderKL``, MONAI >= 1.4); the older MONAI Generative names
(``GenerativeModels``: attention ``to_q``/``proj_attn`` directly on the block, upsampling ``conv``)
are accepted on input. Checkpoint files are always read with ``torch.load(weights_only=True)``.

Example:
    >>> from ndvq.models import KLVAE
    >>> model = KLVAE(n_dims=2, in_channels=1, channels=(8, 16), norm_num_groups=4)
    >>> sd = model.to_monai_state_dict()
    >>> sorted(sd)[-2:]
    ['quant_conv_mu.conv.bias', 'quant_conv_mu.conv.weight']
    >>> again = KLVAE.from_monai_state_dict(sd, n_dims=2, in_channels=1, channels=(8, 16), norm_num_groups=4)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ndvq.errors import CheckpointError
from ndvq.models.backbones.ldm import Downsample, ResBlock, SpatialAttention, Upsample

__all__ = ["monai_key_map", "to_monai_state_dict", "from_monai_state_dict", "load_monai_checkpoint",
           "unwrap_state_dict", "generative_to_core", "monai_arch", "init_from", "MONAI_ARCH_KEYS"]

#: MONAI ``AutoencoderKL`` argument -> ``KLVAE`` argument (those that change the weights or the computation)
MONAI_ARCH_KEYS = {"spatial_dims": "n_dims", "in_channels": "in_channels", "out_channels": "out_channels",
                   "latent_channels": "latent_channels", "channels": "channels", "num_res_blocks": "num_res_blocks",
                   "norm_num_groups": "norm_num_groups", "norm_eps": "norm_eps", "attention_levels": "attention_levels",
                   "with_encoder_nonlocal_attn": "with_encoder_nonlocal_attn",
                   "with_decoder_nonlocal_attn": "with_decoder_nonlocal_attn", "use_convtranspose": "use_convtranspose",
                   "include_fc": "include_fc", "use_combined_linear": "use_combined_linear",
                   "use_flash_attention": "use_flash_attention"}
_WRAPPERS = ("state_dict", "model", "autoencoder", "autoencoder_state_dict", "model_state_dict")
_TOP = {"bottleneck.to_mean.": "quant_conv_mu.conv.", "bottleneck.to_logvar.": "quant_conv_log_sigma.conv.",
        "backbone.post_conv.": "post_quant_conv.conv."}


def _block_names(block: nn.Module, name: str) -> str:
    """MONAI's name for the parameter ``name`` (relative to ``block``) of one encoder/decoder block."""
    head, _, rest = name.partition(".")
    if isinstance(block, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return f"conv.{name}"
    if isinstance(block, ResBlock):
        return f"{head}.conv.{rest}" if head in ("conv1", "conv2", "nin_shortcut") else name
    if isinstance(block, SpatialAttention):
        return name if head == "norm" else f"attn.{name}"
    if isinstance(block, Downsample):
        return f"conv.conv.{rest}"
    if isinstance(block, Upsample):
        return f"postconv.conv.{rest}" if head == "conv" else name
    return name  # GroupNorm


def monai_key_map(model: nn.Module) -> dict[str, str]:
    """``{ndvq key: MONAI AutoencoderKL key}`` for every entry of ``model.state_dict()``.

    Raises:
        CheckpointError: the model has a layer MONAI lacks (``final_activation``, or a 1x1 conv of a
            level with 0 residual blocks), or is not an LDM backbone with a Gaussian bottleneck.
    """
    backbone = getattr(model, "backbone", None)
    if type(backbone).__name__ != "LDMBackbone" or not hasattr(model.bottleneck, "to_mean"):
        raise CheckpointError("only an LDM backbone with a Gaussian bottleneck (KLVAE) has a MONAI AutoencoderKL layout")
    if backbone.final_activation:
        raise CheckpointError("final_activation=True (ndvq's earlier layout) has no MONAI equivalent")
    out: dict[str, str] = {}
    for stack_name in ("encoder", "decoder"):
        stack, index = getattr(backbone, stack_name), 0
        for i, block in enumerate(stack):
            params = list(block.state_dict())
            if isinstance(block, (nn.Identity, nn.SiLU)):
                continue
            if (isinstance(block, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and 0 < i < len(stack) - 1
                    and block.kernel_size[0] == 1):
                raise CheckpointError("a level with 0 residual blocks that changes channels has no MONAI equivalent")
            for p in params:
                out[f"backbone.{stack_name}.{i}.{p}"] = f"{stack_name}.blocks.{index}.{_block_names(block, p)}"
            index += 1
    for key in model.state_dict():
        for ours, theirs in _TOP.items():
            if key.startswith(ours):
                out[key] = theirs + key[len(ours):]
    return out


def to_monai_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under MONAI ``AutoencoderKL`` names (``load_state_dict(strict=True)`` in MONAI)."""
    names = monai_key_map(model)
    return {names[k]: v for k, v in model.state_dict().items()}


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """A raw state dict, or one inside the usual wrappers (``{"state_dict": ...}``, ``{"model": ...}``,
    ``{"autoencoder": ...}``, ...); a ``module.`` prefix (DataParallel/DDP) is dropped."""
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise CheckpointError(f"no state dict found: expected tensors or one of the keys {list(_WRAPPERS)}, "
                                  f"got keys {sorted(map(str, obj))[:8]}")
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a state dict (a mapping of tensors), got {type(obj).__name__}")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def generative_to_core(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MONAI Generative names -> MONAI core names (attention ``X.to_q`` -> ``X.attn.to_q``,
    ``proj_attn`` -> ``attn.out_proj``, decoder upsampling ``conv.conv`` -> ``postconv.conv``)."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"(blocks\.\d+)\.(to_q|to_k|to_v)\.", r"\1.attn.\2.", k)
        k = re.sub(r"(blocks\.\d+)\.proj_attn\.", r"\1.attn.out_proj.", k)
        k = re.sub(r"^decoder\.blocks\.(\d+)\.conv\.conv\.", r"decoder.blocks.\1.postconv.conv.", k)
        out[k] = v
    return out


def _check_keys(theirs: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], names: dict[str, str]) -> None:
    """One-line ``CheckpointError`` at the first missing/unexpected key or wrong shape."""
    expected = {names[k]: tuple(v.shape) for k, v in ours.items()}
    missing = [k for k in expected if k not in theirs]
    if missing:
        raise CheckpointError(f"MONAI state dict lacks {missing[0]!r} (shape {list(expected[missing[0]])}) that the "
                              f"config expects ({len(missing)} missing keys); check channels/num_res_blocks/"
                              f"attention_levels/nonlocal attention/include_fc/use_combined_linear")
    extra = [k for k in theirs if k not in expected]
    if extra:
        raise CheckpointError(f"MONAI state dict has {extra[0]!r} that the config does not build "
                              f"({len(extra)} unexpected keys); check the architecture keys of the config")
    for k, shape in expected.items():
        if tuple(theirs[k].shape) != shape:
            raise CheckpointError(f"MONAI weight {k!r} has shape {list(theirs[k].shape)} but the config expects "
                                  f"{list(shape)}")


def from_monai_state_dict(model: nn.Module, state_dict: Any) -> nn.Module:
    """Load MONAI ``AutoencoderKL`` weights (core or Generative names, raw or wrapped) into ``model``
    (a ``KLVAE`` or LDM x Gaussian ``Autoencoder`` of the same architecture); returns ``model``."""
    names = monai_key_map(model)
    theirs = generative_to_core(unwrap_state_dict(state_dict))
    ours = model.state_dict()
    _check_keys(theirs, ours, names)
    model.load_state_dict({k: theirs[names[k]] for k in ours}, strict=True)
    return model


def load_monai_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a MONAI checkpoint file (``.pt``/``.pth``, or ``.safetensors``) as a state dict, never unpickling code."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"MONAI checkpoint {str(p)!r} does not exist or is not a file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file
            return unwrap_state_dict(load_file(str(p)))
        return unwrap_state_dict(torch.load(p, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, ValueError, EOFError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"cannot read MONAI checkpoint {str(p)!r}: {' '.join(str(e).split())[:200]}") from None


def monai_arch(autoencoder_def: Mapping[str, Any]) -> dict[str, Any]:
    """MONAI ``AutoencoderKL`` keyword arguments (e.g. a ``vae_config.json``'s ``autoencoder_def``) ->
    ``KLVAE`` keyword arguments; ``use_checkpoint`` (no weights) is dropped, unknown keys are an error."""
    unknown = sorted(set(autoencoder_def) - set(MONAI_ARCH_KEYS) - {"use_checkpoint"} - {
        k for k in autoencoder_def if str(k).startswith("_")})
    if unknown:
        raise CheckpointError(f"unknown AutoencoderKL arguments {unknown}; expected some of {sorted(MONAI_ARCH_KEYS)}")
    return {MONAI_ARCH_KEYS[k]: v for k, v in autoencoder_def.items() if k in MONAI_ARCH_KEYS}


def init_from(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Initialise ``model``'s weights from ``path``: a ``save_pretrained`` folder (ndvq weights, strict)
    or a MONAI ``AutoencoderKL`` checkpoint file; returns ``model`` (for ``ndvq train --init-from``)."""
    p = Path(path)
    if p.is_dir():
        from safetensors.torch import load_file

        weights = p / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"--init-from folder {str(p)!r} lacks model.safetensors (a save_pretrained folder)")
        sd, ours = load_file(str(weights)), model.state_dict()
        bad = next((k for k in ours if k not in sd or sd[k].shape != ours[k].shape), None)
        if bad is None:
            bad = next((k for k in sd if k not in ours), None)
        if bad is not None:
            want = list(ours[bad].shape) if bad in ours else "no such weight"
            got = list(sd[bad].shape) if bad in sd else "missing"
            raise CheckpointError(f"--init-from {str(p)!r}: weight {bad!r} is {got} but the config expects {want}")
        model.load_state_dict(sd, strict=True)
        return model
    return from_monai_state_dict(model, load_monai_checkpoint(p))
