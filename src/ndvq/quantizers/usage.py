"""Code-usage statistics computed the same way for every quantizer.

:class:`CodeUsageTracker` consumes the per-step ``counts [G, K]`` of a
:class:`~ndvq.quantizers.base.QuantizerOutput` (already summed over ranks while training, so
every rank's tracker holds the same numbers) and reports:

- ``perplexity()``: ``exp(entropy)`` of the last step's code distribution, averaged over codebooks;
- ``window_usage()``: fraction of codes used at least once in the last ``window`` steps;
- ``dead_codes()``: number of codes (summed over codebooks) unused in the last ``window`` steps.

State is a few buffers (``last_seen [G, K]`` step of each code's last use, ``last_counts``,
``steps``), so it is saved and resumed with ``state_dict`` and memory is ``O(G * K)`` whatever
the window. Nothing syncs to the host: every method returns tensors.

Example:
    >>> import torch
    >>> tracker = CodeUsageTracker(n_codebooks=1, n_codes=4, window=2)
    >>> tracker.update(torch.tensor([[3.0, 1.0, 0.0, 0.0]]))
    >>> tracker.update(torch.tensor([[0.0, 0.0, 2.0, 0.0]]))
    >>> float(tracker.window_usage()), int(tracker.dead_codes())
    (0.75, 1)
"""

from __future__ import annotations

import torch
from torch import nn

from .base import usage_from_counts

__all__ = ["CodeUsageTracker"]


class CodeUsageTracker(nn.Module):
    """Sliding-window code-usage statistics.

    Args:
        n_codebooks: ``G``, rows of ``counts`` (``quantizer.n_codebooks``).
        n_codes: ``K``, columns of ``counts`` (``quantizer.n_codes``).
        window: number of most recent steps ``window_usage``/``dead_codes`` look at. Default 100.
    """

    def __init__(self, n_codebooks: int, n_codes: int, window: int = 100) -> None:
        super().__init__()
        if n_codebooks < 1 or n_codes < 1 or window < 1:
            raise ValueError(f"need n_codebooks, n_codes, window >= 1, got {n_codebooks}, {n_codes}, {window}")
        self.n_codebooks, self.n_codes, self.window = n_codebooks, n_codes, window
        never = torch.full((n_codebooks, n_codes), -(2**62), dtype=torch.long)
        self.register_buffer("last_seen", never)  # step of each code's last use
        self.register_buffer("last_counts", torch.zeros(n_codebooks, n_codes))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, counts: torch.Tensor) -> None:
        """Record one step's ``counts [G, K]`` (or ``[K]`` when ``G == 1``)."""
        if counts.ndim == 1:
            counts = counts.unsqueeze(0)
        if tuple(counts.shape) != (self.n_codebooks, self.n_codes):
            raise ValueError(f"expected counts [{self.n_codebooks}, {self.n_codes}], got {tuple(counts.shape)}")
        counts = counts.detach().to(self.last_counts.device, torch.float32)
        self.last_seen.copy_(torch.where(counts > 0, self.steps, self.last_seen))
        self.last_counts.copy_(counts)
        self.steps.add_(1)

    def _used_in_window(self) -> torch.Tensor:
        return (self.steps - self.last_seen) <= self.window  # [G, K] bool

    def window_usage(self) -> torch.Tensor:
        """Fraction of codes used at least once in the last ``window`` steps (mean over codebooks)."""
        return self._used_in_window().float().mean()

    def dead_codes(self) -> torch.Tensor:
        """Codes unused in the last ``window`` steps, summed over codebooks (long scalar)."""
        return (~self._used_in_window()).sum()

    def perplexity(self) -> torch.Tensor:
        """Perplexity of the last step's counts (mean over codebooks)."""
        return usage_from_counts(self.last_counts)[0]

    def extra_repr(self) -> str:
        return f"n_codebooks={self.n_codebooks}, n_codes={self.n_codes}, window={self.window}"
