"""Input checks shared by the autoencoders: one-line errors naming what was expected and what came.

Shape and dtype checks always run; the NaN/Inf and index-range checks cost a host sync each and run
only while ``validate_inputs`` is True (the training loop may turn them off for speed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ndvq.errors import CodesError, DataError

__all__ = ["InputChecks"]


class InputChecks:
    """Mixin for models with ``n_dims``, ``in_channels``, ``downsample`` (the latent grid's factor per
    axis), ``downsample_rule`` (text for errors) and ``validate_inputs``; ``input_multiple`` (what an
    input size must divide by) is ``downsample`` unless a model says otherwise."""

    n_dims: int
    in_channels: int
    downsample: tuple[int, ...]
    downsample_rule: str
    validate_inputs: bool

    @property
    def input_multiple(self) -> tuple[int, ...]:
        """Every input spatial size must be a positive multiple of this, per axis."""
        return self.downsample

    def latent_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Latent spatial shape for an input spatial shape ``S`` (``n_dims`` ints; ``[C, *S]`` and
        ``[B, C, *S]`` are accepted too); hierarchical models: the bottom grid. Raises ``DataError``
        when ``S`` is not divisible by the downsampling.

        Example:
            >>> from ndvq import VQVAE
            >>> VQVAE(n_dims=2, downsample=(4, 2)).latent_shape((32, 32))
            (8, 16)
        """
        shape = tuple(int(s) for s in input_shape)
        if len(shape) in (self.n_dims + 1, self.n_dims + 2):
            shape = shape[len(shape) - self.n_dims:]
        if len(shape) != self.n_dims:
            raise DataError(f"input_shape needs {self.n_dims} spatial sizes (or [C, *S]), got {list(input_shape)}")
        self.check_divisible(shape)
        return tuple(s // f for s, f in zip(shape, self.downsample))

    def check_divisible(self, spatial: Sequence[int]) -> None:
        """Raise ``DataError`` unless every spatial size is a positive multiple of ``input_multiple``."""
        f = self.input_multiple
        if any(s % d or s < d for s, d in zip(spatial, f)):
            raise DataError(f"spatial size {list(spatial)} is not divisible by the total downsampling {list(f)} "
                            f"(each axis must be a positive multiple of {self.downsample_rule}, got "
                            f"{list(spatial)}); crop or pad the input")

    def check_tensor(self, x: torch.Tensor, channels: int, what: str = "input") -> None:
        """``x`` must be a floating-point ``[B, channels, *S]`` tensor (and finite when validating)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != self.n_dims + 2:
            axes = ", ".join(f"S{i}" for i in range(self.n_dims))
            raise DataError(f"expected {what} [B, C, {axes}] ({self.n_dims + 2} dims for n_dims={self.n_dims}), "
                            f"got {x.ndim} dims with shape {list(x.shape)}")
        if x.shape[1] != channels:
            raise DataError(f"expected {channels} channels (dim 1), got {x.shape[1]} ({what} shape {list(x.shape)})")
        if not x.is_floating_point():
            raise TypeError(f"{what} must be a floating-point tensor, got dtype {x.dtype}; convert with x.float()")
        if self.validate_inputs and not torch.compiler.is_compiling():
            # one reduction + one host sync; the element-wise check only runs when the sum is not finite
            if not torch.isfinite(x.sum(dtype=torch.float32)) and not torch.isfinite(x).all():
                raise DataError(f"{what} contains NaN or Inf values (shape {list(x.shape)}); "
                                "clean the data or check the normalisation")

    def check_input(self, x: torch.Tensor) -> None:
        """``x`` must be ``[B, in_channels, *S]`` floating point with ``S`` divisible by the downsampling."""
        self.check_tensor(x, self.in_channels, "input")
        self.check_divisible(x.shape[2:])

    def check_indices(self, indices: torch.Tensor, suffix: tuple[int, ...], n_codes: int, what: str) -> None:
        """``indices`` must be integer ``[B, *latent, *suffix]`` with values in ``[0, n_codes)``."""
        if not isinstance(indices, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(indices).__name__}")
        if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
            raise TypeError(f"{what} must be an integer tensor, got dtype {indices.dtype}")
        want = 1 + self.n_dims + len(suffix)
        if indices.ndim != want or (suffix and tuple(indices.shape[-len(suffix):]) != tuple(suffix)):
            extra = f", {suffix[0]}" if suffix else ""
            raise CodesError(f"{what} must have shape [B, *latent({self.n_dims} axes){extra}], "
                             f"got {list(indices.shape)}")
        if self.validate_inputs and not torch.compiler.is_compiling() and indices.numel():
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= n_codes:
                raise CodesError(f"{what} must lie in [0, {n_codes - 1}], got values in [{lo}, {hi}]")
