"""Models: :class:`VQVAE`, :class:`HierarchicalVQVAE`, :class:`KLVAE`, and their building blocks.

Every model takes plain keyword arguments, returns a named dataclass from ``forward`` and saves
itself as ``config.json`` + ``model.safetensors`` (:class:`PretrainedMixin`).
"""

from ndvq.networks.hierarchical import HierarchicalVQVAE
from ndvq.networks.outputs import HierarchicalCodes, HierarchicalVQVAEOutput, VQVAEOutput
from ndvq.networks.pretrained import PretrainedMixin, load_pretrained
from ndvq.networks.vqvae import VQVAE

__all__ = [
    "VQVAE",
    "HierarchicalVQVAE",
    "VQVAEOutput",
    "HierarchicalVQVAEOutput",
    "HierarchicalCodes",
    "PretrainedMixin",
    "load_pretrained",
]

try:  # written separately; a missing or broken file must not break the VQ models
    from ndvq.networks.klvae import KLVAE  # noqa: F401

    __all__.append("KLVAE")
except ImportError:  # pragma: no cover - only while klvae.py is absent
    pass
