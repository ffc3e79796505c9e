"""Allegro-style strictly local core (Musaelian et al., Nat. Commun. 2023), on e3nn.

Every feature lives on an ordered pair (i, j) with j inside the cutoff of i:

* a scalar track ``x_ij`` [E, latent_dim] (invariant latent, multiplied by the cutoff envelope), and
* a tensor track ``V_ij`` [E, C, dim] (``num_channels`` channels of the irreps up to ``l_max``).

Each layer builds the environment of the centre atom with the density trick,
``Γ_i = Σ_k w(x_ik) ⊙ Y(r̂_ik)`` (one weighted sum of spherical harmonics per atom, no loop over
triplets), takes the channel-wise tensor product ``V_ij ⊗ Γ_i`` (fused: one Clebsch-Gordan matmul,
:mod:`openmlip.nn.tensor_product`), feeds its scalars into the scalar track and its tensors, mixed
per irrep, into the next ``V_ij``.  No information travels from j's neighbours to i, so the
receptive field is the cutoff sphere however many layers there are.  The final scalar latent gives
a pair energy and a pair charge-transfer amount.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from e3nn import o3

from ..nn.mlp import ScalarMLP
from ..nn.tensor_product import ChannelwiseTP, IrrepLinear
from .config import ModelConfig


def tensor_irreps(channels: int, l_max: int, parity: bool) -> o3.Irreps:
    """e3nn Irreps of ``channels`` copies of each irrep up to ``l_max`` (both parities if ``parity``)."""
    return o3.Irreps([(channels, ir) for ir in irrep_list(l_max, parity)])


def irrep_list(l_max: int, parity: bool) -> List[Tuple[int, int]]:
    irs = []
    for l in range(l_max + 1):
        p = (-1) ** l
        irs.append((l, p))
        if parity:
            irs.append((l, -p))
    return irs


class _EnvWeights(torch.nn.Module):
    """``w(x) ⊙ Y`` -> [E, C, (l_max+1)²]: per-channel, per-l weighted spherical harmonics."""

    def __init__(self, latent_dim: int, channels: int, l_max: int):
        super().__init__()
        self.channels = channels
        self.n_l = l_max + 1
        self.linear = torch.nn.Linear(latent_dim, channels * self.n_l, bias=False)
        torch.nn.init.normal_(self.linear.weight, std=1.0 / latent_dim**0.5)
        l_of_m = [l for l in range(l_max + 1) for _ in range(2 * l + 1)]
        self.register_buffer("l_of_m", torch.tensor(l_of_m, dtype=torch.long))

    def forward(self, x: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
        w = self.linear(x).reshape(-1, self.channels, self.n_l)
        return w.index_select(2, self.l_of_m) * sh.unsqueeze(1)


class _AllegroLayer(torch.nn.Module):
    def __init__(self, cfg: ModelConfig, irreps_in, irreps_env, irreps_next, last: bool):
        super().__init__()
        C = cfg.num_channels
        self.env = _EnvWeights(cfg.latent_dim, C, cfg.l_max)
        allowed = [(0, 1)] if last else sorted(set(irreps_next) | {(0, 1)})
        self.tp = ChannelwiseTP(irreps_in, irreps_env, allowed)
        scal = self.tp.columns_of((0, 1))
        self.register_buffer("scalar_cols", torch.tensor(scal, dtype=torch.long))
        self.latent_mlp = ScalarMLP([cfg.latent_dim + C * len(scal), *cfg.radial_mlp, cfg.latent_dim], bias_last=False)
        self.last = last
        self.linear = IrrepLinear(self.tp, [] if last else irreps_next, C)
        self.inv_sqrt_nn = 1.0 / cfg.avg_num_neighbors**0.5

    def forward(
        self, x: torch.Tensor, v: torch.Tensor, sh: torch.Tensor, u: torch.Tensor, center: torch.Tensor, num_atoms: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        env_edge = self.env(x, sh)
        env_atom = torch.zeros((num_atoms, env_edge.shape[1], env_edge.shape[2]), dtype=x.dtype, device=x.device)
        env_atom = env_atom.index_add(0, center, env_edge) * self.inv_sqrt_nn
        out = self.tp(v, env_atom.index_select(0, center))
        sel = out.index_select(2, self.scalar_cols)
        scalars = sel.reshape(out.shape[0], sel.shape[1] * sel.shape[2])  # explicit: valid with zero edges too
        x = (x + self.latent_mlp(torch.cat([x, scalars], dim=1)) * u.unsqueeze(-1)) * 0.7071067811865476
        if not self.last:
            v = self.linear(out)
        return x, v


class AllegroCore(torch.nn.Module):
    """Pair energies and charge transfers from strictly local pair features."""

    strictly_local = True

    def __init__(self, cfg: ModelConfig, num_node_attr: int):
        super().__init__()
        C = cfg.num_channels
        self.sh = o3.SphericalHarmonics(o3.Irreps.spherical_harmonics(cfg.l_max), normalize=True, normalization="component")
        self.two_body = ScalarMLP([2 * num_node_attr + cfg.num_basis, *cfg.radial_mlp, cfg.latent_dim], bias_last=False)
        self.env0 = _EnvWeights(cfg.latent_dim, C, cfg.l_max)
        irreps_sh = irrep_list(cfg.l_max, False)
        irreps_v = irrep_list(cfg.l_max, cfg.parity)
        layers = []
        irreps_in = irreps_sh
        for k in range(cfg.num_layers):
            last = k == cfg.num_layers - 1
            layers.append(_AllegroLayer(cfg, irreps_in, irreps_sh, irreps_v, last))
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
