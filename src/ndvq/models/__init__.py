"""Models: a backbone (:mod:`ndvq.models.backbones`) times a bottleneck (:mod:`ndvq.models.bottleneck`).

- :class:`Autoencoder` — any backbone (``videogpt``, ``ldm``) with any bottleneck (every quantizer
  kind or ``gaussian``), 1D/2D/3D;
- :class:`HierarchicalAutoencoder` — the two-level VQ-VAE-2;
- presets with their historical flat arguments: :class:`VQVAE`, :class:`KLVAE`, :class:`HierarchicalVQVAE`;
- :data:`MODEL_REGISTRY` / :func:`model_class` — the one name -> class registry; :func:`load_pretrained`.

Every model takes plain keyword arguments (kept in ``model.config``), returns a named dataclass from
``forward``, knows its ``codebook_sizes``, ``downsample``, ``latent_shape`` and ``code_shapes``, and
saves itself as ``config.json`` + ``model.safetensors``.
"""

from ndvq.models.autoencoder import Autoencoder
from ndvq.models.bottleneck import GaussianBottleneck, QuantizerBottleneck, latent_scale_factor
from ndvq.models.hierarchical import HierarchicalAutoencoder, HierarchicalVQVAE
from ndvq.models.outputs import (
    AutoencoderOutput,
    BottleneckOutput,
    GaussianLatent,
    HierarchicalAutoencoderOutput,
    HierarchicalCodes,
)
from ndvq.models.presets import KLVAE, VQVAE
from ndvq.models.pretrained import MODEL_REGISTRY, PretrainedMixin, load_pretrained, model_class

__all__ = [
    "Autoencoder",
    "HierarchicalAutoencoder",
    "VQVAE",
    "KLVAE",
    "HierarchicalVQVAE",
    "QuantizerBottleneck",
    "GaussianBottleneck",
    "AutoencoderOutput",
    "HierarchicalAutoencoderOutput",
    "BottleneckOutput",
    "HierarchicalCodes",
    "GaussianLatent",
    "PretrainedMixin",
    "MODEL_REGISTRY",
    "model_class",
    "load_pretrained",
    "latent_scale_factor",
]
