"""In-graph neighbour lists (TorchScript).

Convention: ``edge_index[0] = i`` (centre), ``edge_index[1] = j`` (neighbour), and the edge vector is
``pos[j] - pos[i] + shift`` with ``shift`` [E, 3] in Cartesian Å (``n @ cell`` for periodic images).
Both directions of every pair are listed.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def _pairs_open(pos: torch.Tensor, batch: torch.Tensor, cutoff: float) -> Tuple[torch.Tensor, torch.Tensor]:
    n = pos.shape[0]
    p = pos.detach()
    d2 = (p.unsqueeze(0) - p.unsqueeze(1)).pow(2).sum(-1)
    mask = (batch.unsqueeze(0) == batch.unsqueeze(1)) & (d2 < cutoff * cutoff)
    mask = mask & ~torch.eye(n, dtype=torch.bool, device=pos.device)
    ij = mask.nonzero().t()
    return ij, torch.zeros((ij.shape[1], 3), dtype=pos.dtype, device=pos.device)


def _pairs_periodic(
    pos: torch.Tensor, idx: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """All pairs (with images) within ``cutoff`` for one structure whose atoms are ``idx``."""
    c = cell.detach()
    inv = torch.linalg.inv(c)
    # wrap into the cell along periodic directions; remember the integer offsets
    frac = pos.detach()[idx] @ inv
    offset = torch.floor(frac) * pbc.to(frac.dtype)
    p = (frac - offset) @ c
    # perpendicular width along lattice direction k = 1 / |column k of inv(cell)|
    widths = 1.0 / torch.linalg.norm(inv, dim=0)
    reps = torch.ceil(cutoff / widths).to(torch.long) * pbc.to(torch.long)
    r0 = torch.arange(-int(reps[0]), int(reps[0]) + 1, device=pos.device)
    r1 = torch.arange(-int(reps[1]), int(reps[1]) + 1, device=pos.device)
    r2 = torch.arange(-int(reps[2]), int(reps[2]) + 1, device=pos.device)
    grid = torch.stack(torch.meshgrid([r0, r1, r2], indexing="ij"), dim=-1).reshape(-1, 3)
    shifts = grid.to(pos.dtype) @ c  # [K, 3]
    vec = p.unsqueeze(0).unsqueeze(2) - p.unsqueeze(1).unsqueeze(2) + shifts.unsqueeze(0).unsqueeze(0)  # [n, n, K, 3]
    d2 = vec.pow(2).sum(-1)
    n = p.shape[0]
    self_pair = torch.eye(n, dtype=torch.bool, device=pos.device).unsqueeze(-1) & (grid.abs().sum(-1) == 0).unsqueeze(0).unsqueeze(0)
    mask = (d2 < cutoff * cutoff) & ~self_pair
    nz = mask.nonzero()
    ij = torch.stack([idx[nz[:, 0]], idx[nz[:, 1]]], dim=0)
    images = grid[nz[:, 2]].to(pos.dtype) + offset[nz[:, 0]] - offset[nz[:, 1]]
    return ij, images @ cell


def neighbor_list(
    pos: torch.Tensor,
    batch: torch.Tensor,
    cutoff: float,
    num_graphs: int,
    cell: Optional[torch.Tensor] = None,
    pbc: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Brute-force neighbour list for a batch of structures, open or periodic (any cell shape).

    Parameters
    ----------
    pos : Tensor [N, 3]
        Positions (Å).
    batch : Tensor [N] int64
        Structure index of each atom.
    cutoff : float
        Cutoff (Å).
    num_graphs : int
        Number of structures B.
    cell : Tensor [B, 3, 3], optional
        Lattice vectors as rows (Å).
    pbc : Tensor [B, 3] bool, optional
        Periodicity per lattice direction.

    Returns
    -------
    edge_index : Tensor [2, E] int64
    shift : Tensor [E, 3]
        Cartesian image shift (Å); zero for open structures.
    """
    if cell is None or pbc is None or not bool(pbc.any()):
        return _pairs_open(pos, batch, cutoff)
    edges = []
    shifts = []
    for b in range(num_graphs):
        idx = (batch == b).nonzero().reshape(-1)
        if bool(pbc[b].any()):
            e, s = _pairs_periodic(pos, idx, cell[b], pbc[b], cutoff)
        else:
            e, s = _pairs_open(pos[idx], torch.zeros_like(idx), cutoff)
            e = idx[e]
        edges.append(e)
        shifts.append(s)
    return torch.cat(edges, dim=1), torch.cat(shifts, dim=0)
