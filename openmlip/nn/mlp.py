"""A plain scalar MLP (SiLU), scriptable, with variance-preserving init."""
from __future__ import annotations

from typing import List

import torch


class ScalarMLP(torch.nn.Module):
    """``Linear -> SiLU -> ... -> Linear``; no activation after the last layer.

    Parameters
    ----------
    dims : list of int
        ``[in, hidden..., out]``.
    bias_last : bool
        Bias on the output layer.
    """

    def __init__(self, dims: List[int], bias_last: bool = True):
        super().__init__()
        layers = []
        for k in range(len(dims) - 1):
            last = k == len(dims) - 2
            lin = torch.nn.Linear(dims[k], dims[k + 1], bias=(bias_last if last else True))
            torch.nn.init.normal_(lin.weight, std=(1.0 if last else 1.679) / dims[k] ** 0.5)
            if lin.bias is not None:
                torch.nn.init.zeros_(lin.bias)
            layers.append(lin)
            if not last:
                layers.append(torch.nn.SiLU())
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
