"""``ndvq convert monai CHECKPOINT --config vae_config.json --out DIR``: a MONAI ``AutoencoderKL``
checkpoint -> an ndvq ``save_pretrained`` folder (``KLVAE``), and back with ``--to-monai``.

The architecture comes from the config: a medical ``vae_config.json`` (its ``autoencoder_def``) or a
JSON object of ``AutoencoderKL`` keyword arguments (``spatial_dims``, ``channels``, ...). The
checkpoint may be a raw state dict or wrapped (``{"state_dict": ...}``, ``{"model": ...}``,
``{"autoencoder": ...}``), with MONAI core (>= 1.4) or MONAI Generative names; it is read with
``torch.load(weights_only=True)``. The folder then trains on with ``ndvq train --init-from DIR``.

Example:
    ndvq convert monai autoencoder.pt --config vae_config.json --out models/from-monai
    ndvq convert monai models/from-monai --to-monai --out autoencoder_ndvq.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ndvq.errors import CheckpointError, ConfigError

__all__ = ["register", "monai_arch_from_config", "convert_monai", "export_monai"]


def monai_arch_from_config(path: str | Path) -> dict[str, Any]:
    """``KLVAE`` keyword arguments from a medical ``vae_config.json`` or a JSON of ``AutoencoderKL`` arguments."""
    from ndvq.config.medical import MEDICAL_DEFAULTS, is_medical_config
    from ndvq.models.monai import monai_arch

    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read {str(p)!r}: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{str(p)!r} must hold a JSON object, got {type(d).__name__}")
    if is_medical_config(d):
        d = {**MEDICAL_DEFAULTS["autoencoder_def"], **d.get("autoencoder_def", {})}
    try:
        return monai_arch({k: v for k, v in d.items() if not str(k).startswith("_")})
    except CheckpointError as e:
        raise ConfigError(f"{str(p)!r}: {e}") from None


def convert_monai(checkpoint: str | Path, config: str | Path, out: str | Path) -> Path:
    """Convert a MONAI ``AutoencoderKL`` checkpoint to a ``save_pretrained`` folder; returns the folder."""
    from ndvq.models import KLVAE
    from ndvq.models.monai import load_monai_checkpoint

    model = KLVAE.from_monai_state_dict(load_monai_checkpoint(checkpoint), **monai_arch_from_config(config))
    return model.save_pretrained(out)


def export_monai(source: str | Path, out: str | Path) -> tuple[Path, dict[str, Any]]:
    """Write the weights of an ndvq KL-VAE (a ``save_pretrained`` folder, run directory or ``.ckpt``) as a
    MONAI ``AutoencoderKL`` state dict (``torch.save``); returns the file and the ``AutoencoderKL`` arguments."""
    import torch

    from ndvq.models import KLVAE
    from ndvq.models.monai import to_monai_state_dict
    from ndvq.run.checkpoint import load_model

    model = load_model(source).model
    sd = to_monai_state_dict(model)
    if isinstance(model, KLVAE):
        args = model.monai_args()
    else:  # an Autoencoder(backbone="ldm", bottleneck="gaussian") trained from a config
        c = model.config
        args = {"spatial_dims": c["n_dims"], "in_channels": c["in_channels"],
                "out_channels": c["out_channels"] or c["in_channels"], "latent_channels": model.embedding_dim,
                **{k: v for k, v in (c.get("ldm") or {}).items() if v is not None and k != "final_activation"}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, out)
    out.with_suffix(".json").write_text(json.dumps(args, indent=2) + "\n")
    return out, args


def _cmd_convert_monai(args) -> int:
    if args.to_monai:
        out, monai_args = export_monai(args.checkpoint, args.out)
        print(f"wrote {out} (MONAI AutoencoderKL state dict) and {out.with_suffix('.json')} "
              f"(AutoencoderKL arguments: {monai_args})")
        return 0
    if args.config is None:
        raise ConfigError("ndvq convert monai needs --config vae_config.json (the AutoencoderKL architecture)")
    folder = convert_monai(args.checkpoint, args.config, args.out)
    print(f"wrote {folder} (config.json + model.safetensors); train on with: ndvq train -c {args.config} "
          f"--init-from {folder}")
    return 0


def register(subparsers) -> None:
    """Add ``convert monai`` to the ``ndvq`` command line (``subparsers`` of the top-level parser)."""
    p = subparsers.add_parser("convert", help="convert checkpoints from and to other toolkits (MONAI)",
                              description="Convert model checkpoints between ndvq and other toolkits.")
    sub = p.add_subparsers(dest="convert_from", metavar="toolkit")
    sub.required = True
    m = sub.add_parser(
        "monai", help="MONAI AutoencoderKL checkpoint -> ndvq save_pretrained folder (or back with --to-monai)",
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  ndvq convert monai autoencoder.pt --config vae_config.json --out models/vae\n"
               "  ndvq convert monai runs/vae --to-monai --out autoencoder.pt")
    m.add_argument("checkpoint", type=Path, help="MONAI checkpoint (.pt/.pth/.safetensors); with --to-monai an "
                   "ndvq folder, run directory or .ckpt")
    m.add_argument("--config", type=Path, help="vae_config.json (its autoencoder_def) or a JSON of AutoencoderKL "
                   "arguments")
    m.add_argument("--out", type=Path, required=True, help="output folder (a MONAI file with --to-monai)")
    m.add_argument("--to-monai", action="store_true", help="export an ndvq KL-VAE to a MONAI state dict instead")
    m.set_defaults(func=_cmd_convert_monai)
