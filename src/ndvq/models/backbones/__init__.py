"""Backbones: encoder/decoder stacks for 1D, 2D and 3D, each with ``encode``, ``decode`` and ``downsample``.

- ``"videogpt"``: :class:`VideoGPTBackbone`, the VideoGPT / ``nd_vq_vae`` residual/attention stack;
- ``"ldm"``: :class:`LDMBackbone`, the multi-level LDM / MONAI stack.
"""

from ndvq.models.backbones.ldm import LDMBackbone
from ndvq.models.backbones.videogpt import VideoGPTBackbone

__all__ = ["BACKBONES", "VideoGPTBackbone", "LDMBackbone"]

#: backbone name -> class (the ``backbone`` argument of :class:`ndvq.models.Autoencoder`).
BACKBONES = {"videogpt": VideoGPTBackbone, "ldm": LDMBackbone}
