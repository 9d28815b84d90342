"""``VideoGPTBackbone``: the VQ-VAE encoder/decoder stack of VideoGPT / ``nd_vq_vae`` for 1D, 2D and 3D.

``encode``: ``x [B, in_channels, *S]`` -> strided convolutions + attention residual blocks
(:class:`~ndvq.models.backbones.blocks.Encoder`) -> 1x1 ``pre_conv`` -> ``[B, latent_channels, *L]``.
``decode``: ``z [B, embedding_dim, *L]`` -> 1x1 ``post_conv`` -> residual blocks + transposed
convolutions (:class:`~ndvq.models.backbones.blocks.Decoder`) -> ``[B, out_channels, *S]``.

``latent_channels`` (default ``embedding_dim``) is what the bottleneck reads from the encoder: a
quantizer takes ``embedding_dim`` channels, a Gaussian bottleneck whatever its ``in_channels`` says.
``condition_channels`` lets a two-level model (VQ-VAE-2) feed extra channels to both 1x1 convolutions:
``pre_conv(cat[h, cond])`` and ``post_conv(cat[cond, z])``.

Example:
    >>> import torch
    >>> bb = VideoGPTBackbone(n_dims=3, in_channels=1, out_channels=1, embedding_dim=8, n_hiddens=16,
    ...                       num_res_blocks=1, downsample=(1, 4, 4))
    >>> z = bb.encode(torch.randn(2, 1, 4, 32, 32))      # [B, E, *L]
    >>> z.shape, bb.decode(z).shape, bb.downsample
    (torch.Size([2, 8, 4, 8, 8]), torch.Size([2, 1, 4, 32, 32]), (1, 4, 4))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ndvq import nd
from ndvq.models.backbones.blocks import Decoder, Encoder, check_downsample

__all__ = ["VideoGPTBackbone"]


class VideoGPTBackbone(nn.Module):
    """The VideoGPT-style residual/attention stack with 1x1 convolutions to and from the latent.

    Args:
        n_dims: spatial axes (1..3).
        in_channels: input channels.
        out_channels: output channels of the decoder.
        embedding_dim: channels the decoder starts from (the bottleneck's output width).
        n_hiddens: hidden channels of encoder and decoder. Default 128.
        num_res_blocks: attention residual blocks in encoder and decoder. Default 2.
        downsample: per-axis downsampling, powers of two; an int or one entry applies to every axis,
            e.g. ``(1, 4, 4)`` keeps time and shrinks space. Default 4.
        n_head: attention heads in the residual blocks; 0 turns attention off. Default 2.
        attn_type: ``"axial"`` (one attention per spatial axis) or ``"full"``. Default ``"axial"``.
        attn_dropout: attention dropout. Default 0.0.
        dropout: dropout inside residual blocks. Default 0.0.
        norm: ``"channel"`` (layer norm over each position's channels: no running statistics, the same on a
            crop and on a whole image), ``"batch"`` or ``"group"``. Default ``"channel"``.
        norm_num_groups: group-norm groups (largest divisor of the channels <= this). Default 32.
        latent_channels: channels of the encoder output (the bottleneck's input); None means
            ``embedding_dim``. Default None.
        condition_channels: extra channels concatenated before ``pre_conv`` (``encode``'s ``cond``)
            and before ``post_conv`` (``decode``'s ``cond``); 0 for none. Default 0.

    Attributes:
        downsample: total downsampling per axis, ``n_dims`` ints.
        n_hiddens: hidden channels (what ``features`` returns).
        downsample_rule: how an input size must relate to ``downsample`` (for error messages).
    """

    def __init__(self, n_dims: int, in_channels: int, out_channels: int, embedding_dim: int, n_hiddens: int = 128,
                 num_res_blocks: int = 2, downsample: int | Sequence[int] = 4, n_head: int = 2,
                 attn_type: str = "axial", attn_dropout: float = 0.0, dropout: float = 0.0, norm: str = "channel",
                 norm_num_groups: int = 32, latent_channels: int | None = None, condition_channels: int = 0) -> None:
        super().__init__()
        nd.check_n_dims(n_dims)
        self.downsample = check_downsample(downsample, n_dims)
        self.downsample_rule = "its factor"
        self.latent_channels = embedding_dim if latent_channels is None else latent_channels
        self.embedding_dim, self.condition_channels, self.n_hiddens = embedding_dim, condition_channels, n_hiddens
        blocks = dict(norm=norm, norm_num_groups=norm_num_groups, dropout=dropout, n_head=n_head,
                      attn_type=attn_type, attn_dropout=attn_dropout)
        self.encoder = Encoder(n_dims, in_channels, n_hiddens, num_res_blocks, self.downsample, **blocks)
        self.pre_conv = nd.conv(n_dims, n_hiddens + condition_channels, self.latent_channels, 1)
        self.post_conv = nd.conv(n_dims, embedding_dim + condition_channels, n_hiddens, 1)
        self.decoder = Decoder(n_dims, out_channels, n_hiddens, num_res_blocks, self.downsample, **blocks)

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight of the decoder's last (transposed) conv (for VQGAN's adaptive adversarial weight)."""
        last = self.decoder.convts[len(self.decoder.convts) - 1]
        return (last.convt if hasattr(last, "convt") else last.conv).weight

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the residual blocks' activations in the backward pass instead of storing them."""
        self.encoder.activation_checkpointing = self.decoder.activation_checkpointing = bool(enabled)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder stack alone: ``[B, in_channels, *S] -> [B, n_hiddens, *L]``."""
        return self.encoder(x)

    def to_latent(self, h: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``pre_conv``: features ``[B, n_hiddens, *L]`` (+ ``cond [B, condition_channels, *L]``) ->
        ``[B, latent_channels, *L]``."""
        if cond is not None:
            h = torch.cat([h, cond], dim=1)  # [B, n_hiddens + condition_channels, *L]
        return self.pre_conv(h)

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, in_channels, *S] -> [B, latent_channels, *S / downsample]``."""
        return self.to_latent(self.features(x), cond)

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``z [B, embedding_dim, *L]`` (after ``cond [B, condition_channels, *L]``) -> ``[B, out_channels, *S]``."""
        if cond is not None:
            z = torch.cat([cond, z], dim=1)  # [B, condition_channels + embedding_dim, *L]
        return self.decoder(self.post_conv(z))
