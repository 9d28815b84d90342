"""ndvq: discrete (VQ-VAE) and continuous (KL-VAE) autoencoders for 1D, 2D and 3D data.

Public names (imported lazily, so ``import ndvq.config`` stays light):

- :class:`Autoencoder` — any backbone (``videogpt``, ``ldm``) x any bottleneck (quantizers, ``gaussian``);
- :class:`VQVAE`, :class:`HierarchicalVQVAE`, :class:`KLVAE` — the presets;
- :class:`NDimVQVAE` — drop-in for the ``nd_vq_vae`` package's class;
- :func:`load_pretrained` — load any model saved with ``save_pretrained``.

Example:
    >>> import torch, ndvq
    >>> model = ndvq.VQVAE(n_dims=2, in_channels=3, n_hiddens=32, downsample=(4, 4), embedding_dim=16, n_codes=64)
    >>> model(torch.randn(2, 3, 32, 32)).reconstruction.shape
    torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

import importlib

__all__ = ["Autoencoder", "VQVAE", "HierarchicalVQVAE", "KLVAE", "NDimVQVAE", "load_pretrained"]

_WHERE = {
    "Autoencoder": "ndvq.models",
    "VQVAE": "ndvq.models",
    "HierarchicalVQVAE": "ndvq.models",
    "KLVAE": "ndvq.models",
    "NDimVQVAE": "ndvq.compat",
    "load_pretrained": "ndvq.models",
}

try:
    from importlib.metadata import version as _version

    __version__ = _version("ndvq")
except Exception:  # not installed (running from a source tree)
    __version__ = "0.0.0"


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ndvq' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
