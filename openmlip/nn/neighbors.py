"""In-graph neighbour lists (TorchScript).

Convention: ``edge_index[0] = i`` (centre), ``edge_index[1] = j`` (neighbour), and the edge vector is
``pos[j] - pos[i] + shift`` with ``shift`` [E, 3] in Cartesian Å (``n @ cell`` for periodic images).
Both directions of every pair are listed.

:func:`neighbor_list` (the models' in-graph list) refuses non-finite positions (such an atom would drop
out of every pair and silently contribute a constant energy and zero force) and two atoms closer than
:data:`COINCIDENT_DISTANCE` (their distance would give NaN), with a :class:`GeometryError`.  The MD lists
(:func:`brute_force_pairs`, :func:`cell_list_pairs`) leave these checks to their caller
(:class:`openmlip.openmm.OpenMMPotential`), which names OpenMM's particle indices.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from .. import keys as K
from ..errors import GeometryError

#: Two atoms closer than this (Å) sit "on one position" (a duplicated atom): refused, not evaluated.
#: (TorchScript cannot read a global float: :func:`coincident` and :func:`coincident_error` repeat it.)
COINCIDENT_DISTANCE = 1e-4


def check_finite_positions(pos: torch.Tensor) -> None:
    """Raise :class:`GeometryError` naming the atoms whose position [N,3] has a NaN or infinite entry."""
    finite = torch.isfinite(pos.detach()).all(dim=-1)
    if not bool(finite.all()):
        bad: List[int] = (~finite).nonzero().reshape(-1).tolist()
        raise GeometryError(
            "positions of {} atom(s) are not finite (NaN or inf), atom indices {}: a blown-up simulation "
            "or a bad input structure; check the coordinates (and the time step)".format(len(bad), bad[:5])
        )


def coincident(d2: torch.Tensor) -> torch.Tensor:
    """Which squared distances ``d2`` (Å²) are below :data:`COINCIDENT_DISTANCE` squared."""
    return d2 < 1e-8


def coincident_error(what: str, a: int, b: int) -> str:
    """Message for two atoms (``what``: "atoms", "ML particles") ``a``, ``b`` closer than :data:`COINCIDENT_DISTANCE`."""
    return (
        "{} {} and {} are closer than 1e-4 Å (two atoms on one position, e.g. a duplicated atom in the input); "
        "remove or move one of them".format(what, a, b)
    )


def _pairs_open(pos: torch.Tensor, batch: torch.Tensor, cutoff: float) -> Tuple[torch.Tensor, torch.Tensor]:
    n = pos.shape[0]
    p = pos.detach()
    d2 = (p.unsqueeze(0) - p.unsqueeze(1)).pow(2).sum(-1)
    mask = (batch.unsqueeze(0) == batch.unsqueeze(1)) & (d2 < cutoff * cutoff)
    mask = mask & ~torch.eye(n, dtype=torch.bool, device=pos.device)
    close = mask & coincident(d2)
    if bool(close.any()):
        k = close.nonzero()[0]
        raise GeometryError(coincident_error("atoms", int(k[0]), int(k[1])))
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
    close = mask & coincident(d2)
    if bool(close.any()):
        k = close.nonzero()[0]
        raise GeometryError(coincident_error("atoms", int(idx[k[0]]), int(idx[k[1]])))
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

    Raises
    ------
    GeometryError
        a position is not finite, or two atoms are closer than :data:`COINCIDENT_DISTANCE`.
    """
    check_finite_positions(pos)
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


# ---------------------------------------------------------------------------------------------
# Single-structure lists for MD (OpenMM): minimum image in OpenMM's reduced triclinic form.
# ---------------------------------------------------------------------------------------------


def minimum_image(vec: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Minimum-image vectors of ``vec`` [..., 3] in the lattice whose rows are ``cell`` [3, 3] (or per vector
    [..., 3, 3], broadcast against ``vec``); any length unit, the same for both.

    OpenMM's rounding, written for any cell: in the frame where the cell is lower triangular (a along x, b in
    the xy plane; OpenMM's boxes already are) it subtracts c·round(v_z/c_z), then b·round(v_y/b_y), then
    a·round(v_x/a_x).  Each step leaves the components it rounded within half the diagonal, so the result is
    the unique image in the brick |v_x| <= a_x/2, |v_y| <= b_y/2, |v_z| <= c_z/2 — a fundamental domain of the
    lattice.  The frame is never built: v_z/c_z, v_y/b_y, v_x/a_x are projections on a × b, (a × b) × a and a.

    Exact when the minimum image is shorter than half the smallest diagonal element, a_x = |a|,
    b_y = |a × b|/|a|, c_z = V/|a × b| (then it lies inside the brick): OpenMM's own condition, cutoff <= half
    the box's diagonal, for its reduced boxes.  Each diagonal element is at least the perpendicular width
    1/|r_k| along its direction, so this also holds wherever rounding the fractional coordinates would be exact,
    and beyond it in skewed boxes, whose smallest width is below their smallest diagonal element (in OpenMM's
    cubic, dodecahedral and octahedral boxes the two are equal).  A longer vector
    comes back as some image, not necessarily the shortest (pairs beyond the cutoff are discarded anyway).
    No host synchronisation (CUDA graphs); the integer shifts carry no gradient, so ``vec`` passes through with
    the identity.
    """
    a, b, c = cell[..., 0, :], cell[..., 1, :], cell[..., 2, :]
    normal = torch.linalg.cross(a, b)  # along z in the triangular frame
    in_plane = torch.linalg.cross(normal, a)  # along y
    v = vec
    n = torch.round((v * normal).sum(-1) / (c * normal).sum(-1)).detach()
    v = v - n.unsqueeze(-1) * c
    n = torch.round((v * in_plane).sum(-1) / (b * in_plane).sum(-1)).detach()
    v = v - n.unsqueeze(-1) * b
    n = torch.round((v * a).sum(-1) / (a * a).sum(-1)).detach()
    return v - n.unsqueeze(-1) * a


def _filter_pairs(
    pos: torch.Tensor, i: torch.Tensor, j: torch.Tensor, cutoff: float, box: Optional[torch.Tensor]
) -> Tuple[torch.Tensor, torch.Tensor]:
    p = pos.detach()
    raw = p[j] - p[i]
    vec = raw if box is None else minimum_image(raw, box.detach())
    keep = ((vec * vec).sum(-1) < cutoff * cutoff) & (i != j)
    return torch.stack([i[keep], j[keep]], dim=0), (vec - raw)[keep]


def padded_shift(cutoff: float) -> float:
    """Length (Å) of the edge vector given to the padding slots of :func:`static_pairs`: beyond the cutoff,
    where every per-edge term of a model is exactly zero (the envelope, and its derivative, vanish)."""
    return 2.0 * cutoff + 1.0


def static_pairs(
    pos: torch.Tensor, cutoff: float, box: Optional[torch.Tensor], capacity: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All ordered pairs within ``cutoff`` (minimum image when ``box`` is given) in a list of fixed length.

    Static shapes and no host synchronisation (no ``nonzero``, boolean indexing or tensor-to-Python
    conversion), so the list can run inside a CUDA graph.  The pairs come in the order of
    :func:`brute_force_pairs` (row-major over (i, j)), compacted with a prefix sum into ``capacity`` slots.
    Unused slots hold the pair (0, 0) with the shift (:func:`padded_shift`, 0, 0): an edge vector longer
    than the cutoff, which contributes exactly zero energy and force to a model with a cutoff envelope.

    Returns
    -------
    edge_index : Tensor [2, capacity] int64
    shift : Tensor [capacity, 3]
        Cartesian image shift (Å) of the real pairs; the padding vector for unused slots.
    count : Tensor [] int64
        Number of pairs within the cutoff; ``count > capacity`` means pairs were left out (overflow): the
        caller must refuse the result (raise, or poison the energy with NaN inside a CUDA graph).
    """
    n = pos.shape[0]
    p = pos.detach()
    idx = torch.arange(n, device=pos.device)
    i = idx.unsqueeze(1).expand(n, n).reshape(-1)
    j = idx.repeat(n)
    raw = p.index_select(0, j) - p.index_select(0, i)
    vec = raw if box is None else minimum_image(raw, box.detach())
    keep = ((vec * vec).sum(-1) < cutoff * cutoff) & (i != j)
    slot = torch.cumsum(keep.to(torch.long), 0) - 1
    count = slot[-1] + 1 if n > 0 else torch.zeros((), dtype=torch.long, device=pos.device)
    # kept pairs go to their slot; the rest (and any beyond capacity) to one extra slot that is dropped
    target = torch.where(keep & (slot < capacity), slot, torch.full_like(slot, capacity))
    edge_i = torch.zeros(capacity + 1, dtype=torch.long, device=pos.device).scatter(0, target, i)[:capacity]
    edge_j = torch.zeros(capacity + 1, dtype=torch.long, device=pos.device).scatter(0, target, j)[:capacity]
    shift = torch.zeros((capacity + 1, 3), dtype=pos.dtype, device=pos.device).scatter(
        0, target.unsqueeze(1).expand(target.shape[0], 3), vec - raw)[:capacity]
    used = torch.arange(capacity, device=pos.device) < count
    far = torch.zeros((1, 3), dtype=pos.dtype, device=pos.device)
    far[0, 0] = padded_shift(cutoff)
    shift = torch.where(used.unsqueeze(1), shift, far)
    return torch.stack([edge_i, edge_j], dim=0), shift, count


def brute_force_pairs(pos: torch.Tensor, cutoff: float, box: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """All ordered pairs within ``cutoff`` (minimum image when ``box`` is given), exactly as many as there
    are: :func:`static_pairs` trimmed to its count (one host synchronisation).  O(N²)."""
    n = pos.shape[0]
    edge_index, shift, count = static_pairs(pos, cutoff, box, max(n * (n - 1), 0))
    k = int(count)
    return edge_index[:, :k], shift[:k]


def cell_list_pairs(pos: torch.Tensor, cutoff: float, box: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Same result as :func:`brute_force_pairs` in O(N): atoms sorted into bins of width >= cutoff,
    candidates from the 27 neighbouring bins (wrapping under PBC).  Falls back to brute force when a
    periodic direction holds fewer than 3 bins (a bin would be visited twice)."""
    n = pos.shape[0]
    p = pos.detach()
    if box is not None:
        b = box.detach()
        inv = torch.linalg.inv(b)
        frac = p @ inv
        frac = frac - torch.floor(frac)
        widths = 1.0 / torch.linalg.norm(inv, dim=0)
        nbins = torch.floor(widths / cutoff).to(torch.long).clamp(min=1)
        if bool((nbins < 3).any()):
            return brute_force_pairs(pos, cutoff, box)
        vox = torch.floor(frac * nbins.to(frac.dtype)).to(torch.long)
        vox = torch.minimum(vox, nbins - 1)
    else:
        lo = p.min(dim=0).values
        vox = torch.floor((p - lo) / cutoff).to(torch.long)
        nbins = vox.max(dim=0).values + 1
        if float(nbins.to(torch.float64).prod()) > 64 * n + 1000:  # very sparse (float: no int64 overflow for far-flung atoms)
            return brute_force_pairs(pos, cutoff, box)
    nx, ny, nz = int(nbins[0]), int(nbins[1]), int(nbins[2])
    vid = (vox[:, 0] * ny + vox[:, 1]) * nz + vox[:, 2]
    order = torch.argsort(vid)
    counts = torch.bincount(vid, minlength=nx * ny * nz)
    starts = torch.cumsum(counts, 0) - counts
    r = torch.arange(-1, 2, device=pos.device)
    offsets = torch.stack(torch.meshgrid([r, r, r], indexing="ij"), dim=-1).reshape(-1, 3)
    nb = vox.unsqueeze(1) + offsets.unsqueeze(0)  # [n, 27, 3]
    if box is not None:
        nb = torch.remainder(nb, nbins)
        valid = torch.ones(nb.shape[:2], dtype=torch.bool, device=pos.device)
    else:
        valid = ((nb >= 0) & (nb < nbins)).all(dim=-1)
        nb = torch.minimum(nb.clamp(min=0), nbins - 1)
    nb_id = ((nb[..., 0] * ny + nb[..., 1]) * nz + nb[..., 2]).reshape(-1)
    cnt = counts[nb_id] * valid.reshape(-1).to(torch.long)
    total = int(cnt.sum())
    i = torch.arange(n, device=pos.device).repeat_interleave(27).repeat_interleave(cnt, output_size=total)
    first = (torch.cumsum(cnt, 0) - cnt).repeat_interleave(cnt, output_size=total)
    within = torch.arange(total, device=pos.device) - first
    j = order[starts[nb_id].repeat_interleave(cnt, output_size=total) + within]
    return _filter_pairs(pos, i, j, cutoff, box)


def cell_and_pbc(data: Dict[str, torch.Tensor], dtype: torch.dtype) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The periodic cells [B, 3, 3] (Å, rows = lattice vectors; cast to ``dtype``) and flags [B, 3] of an
    atomic-data dictionary, each None when absent."""
    cell: Optional[torch.Tensor] = None
    pbc: Optional[torch.Tensor] = None
    if K.CELL in data:
        cell = data[K.CELL].to(dtype).reshape(-1, 3, 3)
    if K.PBC in data:
        pbc = data[K.PBC].reshape(-1, 3)
    return cell, pbc
