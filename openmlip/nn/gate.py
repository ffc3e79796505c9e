"""Gated nonlinearity for e3nn irreps that scripts with plain ``torch.jit.script``.

Same maths as :class:`e3nn.nn.Gate` (SiLU on scalars, sigmoid gates multiplying each channel of the
non-scalar irreps), written without e3nn's Python-only ``Activation`` so that whole models script.
"""

from typing import List

import torch
from e3nn import o3


class ScriptableGate(torch.nn.Module):
    """Input layout: ``scalars (n_s x 0e) + gates (n_g x 0e) + gated irreps``; output: ``scalars + gated``.

    Parameters
    ----------
    irreps_scalars : o3.Irreps
        Even scalars passed through SiLU (odd scalars ``0o`` go through tanh, which keeps parity).
    irreps_gated : o3.Irreps
        Irreps with l > 0; one gate scalar per channel.
    """

    muls: List[int]
    dims: List[int]

    def __init__(self, irreps_scalars: o3.Irreps, irreps_gated: o3.Irreps):
        super().__init__()
        irreps_scalars = o3.Irreps(irreps_scalars)
        irreps_gated = o3.Irreps(irreps_gated)
        self.num_gates = irreps_gated.num_irreps
        self.irreps_in = irreps_scalars + o3.Irreps(f"{self.num_gates}x0e") + irreps_gated
        self.irreps_out = irreps_scalars + irreps_gated
        self.scalar_dim = irreps_scalars.dim
        odd = []
        for mul, ir in irreps_scalars:
            odd += [1.0 if ir.p == -1 else 0.0] * mul
        self.register_buffer("odd_mask", torch.tensor(odd, dtype=torch.get_default_dtype()))
        muls: List[int] = []
        dims: List[int] = []
        for mul, ir in irreps_gated:
            muls.append(mul)
            dims.append(ir.dim)
        self.muls = muls
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, : self.scalar_dim]
        m = self.odd_mask.to(x.dtype)
        s = torch.nn.functional.silu(s) * (1.0 - m) + torch.tanh(s) * m
        g = torch.sigmoid(x[:, self.scalar_dim : self.scalar_dim + self.num_gates])
        rest = x[:, self.scalar_dim + self.num_gates :]
        out = [s]
        i_feat = 0
        i_gate = 0
        for mul, d in zip(self.muls, self.dims):
            block = rest[:, i_feat : i_feat + mul * d].reshape(-1, mul, d)
            block = block * g[:, i_gate : i_gate + mul].unsqueeze(-1)
            out.append(block.reshape(-1, mul * d))
            i_feat += mul * d
            i_gate += mul
        return torch.cat(out, dim=1)
