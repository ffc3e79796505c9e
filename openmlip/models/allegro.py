"""Allegro-style strictly local core (Musaelian et al., Nat. Commun. 2023), on e3nn.

Every feature lives on an ordered pair (i, j) with j inside the cutoff of i:

* a scalar track ``x_ij`` [E, latent_dim] (invariant latent, multiplied by the cutoff envelope), and
* a tensor track ``V_ij`` (``num_channels`` channels per irrep up to ``l_max``).

Each layer builds the environment of the centre atom with the density trick,
``Γ_i = Σ_k w(x_ik) ⊙ Y(r̂_ik)`` (one weighted sum of spherical harmonics per atom, no loop over
triplets), takes the channel-wise tensor product ``V_ij ⊗ Γ_i``, feeds its scalars into the scalar
track and its tensors into the next ``V_ij``.  No information travels from j's neighbours to i, so
the receptive field is the cutoff sphere however many layers there are.  The final scalar latent
gives a pair energy and a pair charge-transfer amount.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from e3nn import o3

from ..nn.mlp import ScalarMLP
from .config import ModelConfig


def tensor_irreps(channels: int, l_max: int, parity: bool) -> o3.Irreps:
    irs = []
    for l in range(l_max + 1):
        p = (-1) ** l
        irs.append((channels, (l, p)))
        if parity:
            irs.append((channels, (l, -p)))
    return o3.Irreps(irs)


class _EnvWeights(torch.nn.Module):
    """``w(x) ⊙ Y``: per-channel weighted spherical harmonics in e3nn's mul-major layout."""

    def __init__(self, latent_dim: int, channels: int, l_max: int):
        super().__init__()
        self.channels = channels
        self.l_max = l_max
        self.linear = torch.nn.Linear(latent_dim, channels * (l_max + 1), bias=False)
        torch.nn.init.normal_(self.linear.weight, std=1.0 / latent_dim**0.5)

    def forward(self, x: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
        w = self.linear(x).reshape(-1, self.l_max + 1, self.channels)
        out: List[torch.Tensor] = []
        for l in range(self.l_max + 1):
            y = sh[:, l * l : (l + 1) * (l + 1)]
            out.append((w[:, l, :].unsqueeze(-1) * y.unsqueeze(1)).reshape(x.shape[0], -1))
        return torch.cat(out, dim=1)


class _AllegroLayer(torch.nn.Module):
    def __init__(self, cfg: ModelConfig, irreps_in: o3.Irreps, irreps_env: o3.Irreps, irreps_next: o3.Irreps, last: bool):
        super().__init__()
        C = cfg.num_channels
        self.env = _EnvWeights(cfg.latent_dim, C, cfg.l_max)
        allowed = set(ir for _, ir in irreps_next) | {o3.Irrep("0e")}
        outs = []
        instr = []
        for i1, (_, ir1) in enumerate(irreps_in):
            for i2, (_, ir2) in enumerate(irreps_env):
                for ir3 in ir1 * ir2:
                    if ir3 in allowed and (not last or ir3 == o3.Irrep("0e")):
                        instr.append((i1, i2, len(outs), "uuu", False))
                        outs.append((C, ir3))
        irreps_out = o3.Irreps(outs)
        self.tp = o3.TensorProduct(irreps_in, irreps_env, irreps_out, instr)
        # positions of the scalar outputs in the TP output
        scal: List[int] = []
        start = 0
        for mul, ir in irreps_out:
            if ir == o3.Irrep("0e"):
                scal += list(range(start, start + mul))
            start += mul * ir.dim
        self.register_buffer("scalar_idx", torch.tensor(scal, dtype=torch.long))
        self.latent_mlp = ScalarMLP([cfg.latent_dim + len(scal), *cfg.radial_mlp, cfg.latent_dim], bias_last=False)
        self.last = last
        if not last:
            self.linear = o3.Linear(irreps_out, irreps_next)
        else:
            self.linear = o3.Linear(o3.Irreps("1x0e"), o3.Irreps("1x0e"))  # unused placeholder for scripting
        self.inv_sqrt_nn = 1.0 / cfg.avg_num_neighbors**0.5

    def forward(
        self, x: torch.Tensor, v: torch.Tensor, sh: torch.Tensor, u: torch.Tensor, center: torch.Tensor, num_atoms: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        env_edge = self.env(x, sh)
        env_atom = torch.zeros((num_atoms, env_edge.shape[1]), dtype=x.dtype, device=x.device)
        env_atom = env_atom.index_add(0, center, env_edge) * self.inv_sqrt_nn
        out = self.tp(v, env_atom[center])
        scalars = out.index_select(1, self.scalar_idx)
        x = (x + self.latent_mlp(torch.cat([x, scalars], dim=1)) * u.unsqueeze(-1)) * 0.7071067811865476
        if not self.last:
            v = self.linear(out)
        return x, v


class AllegroCore(torch.nn.Module):
    """Pair energies and charge transfers from strictly local pair features."""

    def __init__(self, cfg: ModelConfig, num_node_attr: int):
        super().__init__()
        C = cfg.num_channels
        self.irreps_sh = o3.Irreps.spherical_harmonics(cfg.l_max)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.two_body = ScalarMLP([2 * num_node_attr + cfg.num_basis, *cfg.radial_mlp, cfg.latent_dim], bias_last=False)
        self.env0 = _EnvWeights(cfg.latent_dim, C, cfg.l_max)
        irreps_env = o3.Irreps([(C, ir) for _, ir in self.irreps_sh])
        irreps_v = tensor_irreps(C, cfg.l_max, cfg.parity)
        layers = []
        irreps_in = irreps_env
        for k in range(cfg.num_layers):
            last = k == cfg.num_layers - 1
            layers.append(_AllegroLayer(cfg, irreps_in, irreps_env, irreps_v, last))
            irreps_in = irreps_v
        self.layers = torch.nn.ModuleList(layers)
        self.readout = ScalarMLP([cfg.latent_dim, cfg.latent_dim // 2, 2])

    def forward(
        self,
        node_attr: torch.Tensor,
        center: torch.Tensor,
        neighbor: torch.Tensor,
        edge_vec: torch.Tensor,
        radial: torch.Tensor,
        u: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        num_atoms = node_attr.shape[0]
        sh = self.sh(edge_vec)
        x = self.two_body(torch.cat([node_attr[center], node_attr[neighbor], radial], dim=1)) * u.unsqueeze(-1)
        v = self.env0(x, sh)
        for layer in self.layers:
            x, v = layer(x, v, sh, u, center, num_atoms)
        out = self.readout(x)
        node_energy = torch.zeros(num_atoms, dtype=x.dtype, device=x.device)
        return out[:, 0], out[:, 1] * u, node_energy
