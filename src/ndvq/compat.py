"""``NDimVQVAE``: a drop-in for the ``nd_vq_vae`` package's class of the same name.

Same constructor arguments, same call signature and return value, so code written for
``nd_vq_vae`` runs after changing only its import line::

    from ndvq import NDimVQVAE          # was: from nd_vq_vae import NDimVQVAE

    model = NDimVQVAE(embedding_dim=64, n_codes=64, n_dims=3, downsample=[1, 4, 4], n_hiddens=64,
                      n_res_layers=2, codebook_beta=0.10, input_shape=(3, 4, 64, 64))
    recon_loss, x_recon, vq_output = model(torch.randn(2, 3, 4, 64, 64))

What is kept from the reference: the layer pattern, ``recon_loss = mse / 0.06``, attention with 2
heads and attention dropout 0.1, EMA decay 0.99, ``vq_output["commitment_loss"]`` already
multiplied by ``codebook_beta`` (add it to ``recon_loss`` for the training loss).
What is fixed: channels come from ``input_shape[0]`` (the reference always assumed 3), attention
runs over channels-last tokens and sizes itself from the input (the reference assumed 32^n
inputs), ``latent_shape`` ignores the channel entry of ``input_shape``, and the codebook is the
ndvq default quantizer (k-means init, dead-code restart, chunked search).
Differences: this is a ``torch.nn.Module``, not a Lightning module; ``training_step`` and
``configure_optimizers`` exist for manual loops but nothing is logged. Any :class:`ndvq.VQVAE`
argument (``n_head``, ``attn_type``, ``norm``, ``quantizer``, ...) can be passed as an extra keyword.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn

from ndvq import nd
from ndvq.errors import ConfigError
from ndvq.models.presets import VQVAE
from ndvq.models.pretrained import PretrainedMixin
from ndvq.objectives.reconstruction import reconstruction_loss

__all__ = ["NDimVQVAE"]

#: VQVAE arguments the reference hard-coded, as it hard-coded them (recon loss divided by 0.06, 2 heads,
#: attention dropout 0.1, EMA 0.99, batch norm); each can be overridden by a keyword argument.
REFERENCE_DEFAULTS = dict(recon_loss_factor=1.0 / 0.06, recon_loss="mse", n_head=2, attn_type="axial",
                          attn_dropout=0.1, ema_decay=0.99, norm="batch")

_OWN_ARGS = ("embedding_dim", "n_codes", "n_dims", "downsample", "n_hiddens", "n_res_layers", "codebook_beta")


class NDimVQVAE(PretrainedMixin, nn.Module):
    """Drop-in replacement for ``nd_vq_vae.NDimVQVAE``.

    Args:
        embedding_dim: code vector width.
        n_codes: codebook size.
        n_dims: spatial axes (1..3).
        downsample: per-axis downsampling factors (powers of two; strings such as argparse gives are accepted).
        n_hiddens: hidden channels.
        n_res_layers: attention residual blocks in encoder and decoder.
        codebook_beta: commitment weight.
        input_shape: ``(C, *S)``; ``C`` is the number of input channels. A spatial-only ``S``
            (``n_dims`` entries) means 3 channels, as the reference assumed.
        **vqvae_kwargs: any further :class:`ndvq.VQVAE` argument; defaults in :data:`REFERENCE_DEFAULTS`.

    Example:
        >>> model = NDimVQVAE(embedding_dim=16, n_codes=32, n_dims=2, downsample=[4, 4], n_hiddens=32,
        ...                   n_res_layers=1, codebook_beta=0.1, input_shape=(1, 32, 32))
        >>> recon_loss, x_recon, vq = model(torch.randn(2, 1, 32, 32))
        >>> sorted(vq)[:4]
        ['commitment_loss', 'embeddings', 'encodings', 'perplexity']
    """

    def __init__(self, embedding_dim: int, n_codes: int, n_dims: int, downsample: Sequence[int], n_hiddens: int,
                 n_res_layers: int, codebook_beta: float, input_shape: Sequence[int], **vqvae_kwargs) -> None:
        super().__init__()
        nd.check_n_dims(n_dims)
        try:
            downsample = [int(d) for d in downsample]
            input_shape = [int(s) for s in input_shape]
        except (TypeError, ValueError):
            raise TypeError(f"downsample and input_shape must be sequences of ints, got {downsample!r}, "
                            f"{input_shape!r}") from None
        if len(input_shape) == n_dims + 1:
            in_channels, spatial = input_shape[0], input_shape[1:]
        elif len(input_shape) == n_dims:
            in_channels, spatial = 3, input_shape
        else:
            raise ConfigError(f"input_shape must be (C, *S) with {n_dims} spatial sizes for n_dims={n_dims}, "
                             f"got {input_shape}")
        allowed = set(inspect.signature(VQVAE).parameters) - set(_OWN_ARGS) - {"in_channels"}
        unknown = sorted(set(vqvae_kwargs) - allowed)
        if unknown:
            raise TypeError(f"NDimVQVAE got unexpected keyword arguments {unknown}; extra keywords must be "
                            f"VQVAE arguments {sorted(allowed)} (channels come from input_shape[0])")
        self.embedding_dim, self.n_codes, self.n_dims = embedding_dim, n_codes, n_dims
        self.downsample, self.n_hiddens, self.n_res_layers = downsample, n_hiddens, n_res_layers
        self.codebook_beta, self.input_shape = codebook_beta, input_shape
        self.config = dict(embedding_dim=embedding_dim, n_codes=n_codes, n_dims=n_dims, downsample=downsample,
                           n_hiddens=n_hiddens, n_res_layers=n_res_layers, codebook_beta=codebook_beta,
                           input_shape=input_shape, **vqvae_kwargs)
        args = {**REFERENCE_DEFAULTS, **vqvae_kwargs}
        self.model = VQVAE(n_dims=n_dims, in_channels=in_channels, n_hiddens=n_hiddens, n_res_layers=n_res_layers,
                           downsample=downsample, embedding_dim=embedding_dim, n_codes=n_codes,
                           codebook_beta=codebook_beta, **args)
        self._spatial = tuple(spatial)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Latent spatial shape for ``input_shape`` (its channel entry ignored)."""
        return self.model.latent_shape(self._spatial)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """Codes per index column (asked of the wrapped :class:`ndvq.VQVAE`)."""
        return self.model.codebook_sizes

    def code_shapes(self, input_shape) -> list[tuple[int, ...]]:
        """Per-item shape of the code grid for an input spatial shape (as :meth:`ndvq.VQVAE.code_shapes`)."""
        return self.model.code_shapes(input_shape)

    def _vq(self, x: torch.Tensor) -> dict:
        q = self.model.bottleneck(self.model.backbone.encode(x))  # latent [B, D, *L]
        return dict(embeddings=q.latent, encodings=q.indices, commitment_loss=q.aux_loss,
                    perplexity=q.perplexity, safe_perplexity=q.perplexity, usage=q.usage)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``x [B, C, *S]`` -> ``(recon_loss, x_recon, vq_output)`` where ``recon_loss = mse(x_recon, x) / 0.06``
        (``recon_loss_factor``) and ``vq_output`` holds ``embeddings [B, D, *L]`` (straight-through),
        ``encodings [B, *L]``, ``commitment_loss`` (weighted by ``codebook_beta``), ``perplexity``,
        ``safe_perplexity`` (same value) and ``usage``."""
        self.model.check_input(x)
        vq = self._vq(x)
        x_recon = self.model.backbone.decode(vq["embeddings"])
        rec = self.model.recon_loss_factor * reconstruction_loss(x_recon, x, self.model.recon_loss_kind)
        return rec, x_recon, vq

    def encode(self, x: torch.Tensor, include_embeddings: bool = False):
        """``x -> encodings [B, *L]`` (and the channels-first ``embeddings`` when ``include_embeddings``)."""
        self.model.check_input(x)
        vq = self._vq(x)
        return (vq["encodings"], vq["embeddings"]) if include_embeddings else vq["encodings"]

    def decode(self, encodings: torch.Tensor) -> torch.Tensor:
        """``encodings [B, *L] -> x_recon [B, C, *S]``."""
        return self.model.decode(encodings)

    def training_step(self, batch, batch_idx: int = 0) -> torch.Tensor:
        """``recon_loss + commitment_loss`` of ``batch["data"]`` (or of a tensor batch), as the reference."""
        x = batch["data"] if isinstance(batch, dict) else batch
        recon_loss, _, vq = self(x)
        return recon_loss + vq["commitment_loss"]

    def validation_step(self, batch, batch_idx: int = 0) -> torch.Tensor:
        """The reconstruction loss of ``batch["data"]`` (or of a tensor batch)."""
        x = batch["data"] if isinstance(batch, dict) else batch
        return self(x)[0]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with the reference's settings (lr 1e-4, betas (0.9, 0.999))."""
        return torch.optim.Adam(self.parameters(), lr=1e-4, betas=(0.9, 0.999))
