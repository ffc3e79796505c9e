"""NequIP-style message-passing core (Batzner et al., Nat. Commun. 2022), on e3nn.

Node features ``h_i`` (``num_channels`` channels per irrep up to ``l_max``) pass through interaction
blocks: a self-interaction, an equivariant convolution ``Σ_j R(r_ij) (h_j ⊗ Y(r̂_ij))`` with radial
weights from an MLP of the Bessel basis times the cutoff envelope, a species-dependent
self-connection, a gated nonlinearity and a residual update.  The receptive field grows by one
cutoff per layer.  The readout gives a node energy plus pair energies and pair charge transfers
from the final invariant node features, so the same aggregation modes apply as for Allegro.
"""
from __future__ import annotations

from typing import Tuple

import torch
from e3nn import o3

from ..nn.gate import ScriptableGate
from ..nn.mlp import ScalarMLP
from .allegro import tensor_irreps
from .config import ModelConfig


class _Interaction(torch.nn.Module):
    def __init__(self, cfg: ModelConfig, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_hidden: o3.Irreps, num_species: int):
        super().__init__()
        self.lin1 = o3.Linear(irreps_in, irreps_in)
        allowed = set(ir for _, ir in irreps_hidden)
        outs = []
        instr = []
        for i1, (mul, ir1) in enumerate(irreps_in):
            for i2, (_, ir2) in enumerate(irreps_sh):
                for ir3 in ir1 * ir2:
                    if ir3 in allowed:
                        instr.append((i1, i2, len(outs), "uvu", True))
                        outs.append((mul, ir3))
        irreps_mid = o3.Irreps(outs)
        self.tp = o3.TensorProduct(irreps_in, irreps_sh, irreps_mid, instr, shared_weights=False, internal_weights=False)
        self.radial = ScalarMLP([cfg.num_basis, *cfg.radial_mlp, self.tp.weight_numel])
        scalars = o3.Irreps([(m, ir) for m, ir in irreps_hidden if ir.l == 0])
        gated = o3.Irreps([(m, ir) for m, ir in irreps_hidden if ir.l > 0])
        self.gate = ScriptableGate(scalars, gated)
        self.lin2 = o3.Linear(irreps_mid, self.gate.irreps_in)
        self.self_connection = o3.FullyConnectedTensorProduct(irreps_in, o3.Irreps(f"{num_species}x0e"), self.gate.irreps_in)
        self.residual = o3.Irreps(irreps_in) == self.gate.irreps_out
        self.inv_sqrt_nn = 1.0 / cfg.avg_num_neighbors**0.5
        self.irreps_out = self.gate.irreps_out

    def forward(
        self, h: torch.Tensor, onehot: torch.Tensor, sh: torch.Tensor, radial: torch.Tensor, u: torch.Tensor,
        center: torch.Tensor, neighbor: torch.Tensor,
    ) -> torch.Tensor:
        w = self.radial(radial) * u.unsqueeze(-1)
        msg = self.tp(self.lin1(h)[neighbor], sh, w)
        agg = torch.zeros((h.shape[0], msg.shape[1]), dtype=h.dtype, device=h.device).index_add(0, center, msg)
        out = self.gate(self.lin2(agg * self.inv_sqrt_nn) + self.self_connection(h, onehot))
        if self.residual:
            out = (h + out) * 0.7071067811865476
        return out


class NequIPCore(torch.nn.Module):
    """Node energies, pair energies and pair charge transfers from message passing."""

    strictly_local = False  # messages carry information over num_layers cutoffs

    def __init__(self, cfg: ModelConfig, num_node_attr: int):
        super().__init__()
        C = cfg.num_channels
        self.num_species = len(cfg.elements)
        self.irreps_sh = o3.Irreps.spherical_harmonics(cfg.l_max)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.embed = torch.nn.Linear(num_node_attr, C)
        irreps_hidden = tensor_irreps(C, cfg.l_max, cfg.parity)
        layers = []
        irreps = o3.Irreps(f"{C}x0e")
        for _ in range(cfg.num_layers):
            layer = _Interaction(cfg, irreps, self.irreps_sh, irreps_hidden, self.num_species)
            layers.append(layer)
            irreps = layer.irreps_out
        self.layers = torch.nn.ModuleList(layers)
        self.num_channels = C  # the first C features of every layer output are the 0e scalars
        self.node_readout = ScalarMLP([C, C, 1])
        self.pair_readout = ScalarMLP([2 * C + cfg.num_basis, *cfg.radial_mlp, 2])

    def forward(
        self,
        node_attr: torch.Tensor,
        center: torch.Tensor,
        neighbor: torch.Tensor,
        edge_vec: torch.Tensor,
        radial: torch.Tensor,
        u: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        onehot = node_attr[:, : self.num_species]
        sh = self.sh(edge_vec)
        h = self.embed(node_attr)
        for layer in self.layers:
            h = layer(h, onehot, sh, radial, u, center, neighbor)
        s = h[:, : self.num_channels]
        pair = self.pair_readout(torch.cat([s[center], s[neighbor], radial], dim=1))
        return pair[:, 0], pair[:, 1] * u, self.node_readout(s).squeeze(-1)
