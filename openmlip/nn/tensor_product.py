"""Fused channel-wise ("uuu") tensor product for features stored as ``[E, C, dim]``.

e3nn's ``TensorProduct`` runs a few small kernels per path; for Allegro's channel-wise product
every channel uses the *same* bilinear map, so the whole product is one outer product followed by
one matmul with a constant ``[dim1*dim2, dim_out]`` Clebsch-Gordan tensor.  That tensor is extracted
from e3nn's own ``TensorProduct`` by evaluating it on basis vectors (float64), so normalisation and
phase conventions are e3nn's exactly.  A layer is a few operators instead of e3nn's few per path.

Where at most half of the ``dim1*dim2`` products reach any output (Allegro's last layer, which keeps
only scalars: at l_max 2, 9 of 162), only those products are formed: the same sum without its zero
terms.  The dense layers keep the matmul (gathering their nonzeros is slower on the CPU).  Timings:
docs/benchmarks.md, "Measurements behind the code".
"""

from typing import List, Sequence, Tuple

import torch
from e3nn import o3

Irrep = Tuple[int, int]  # (l, parity)


def irreps_dim(irreps: Sequence[Irrep]) -> int:
    return sum(2 * l + 1 for l, _ in irreps)


def as_e3nn(irreps: Sequence[Irrep], mul: int = 1) -> o3.Irreps:
    return o3.Irreps([(mul, (l, p)) for l, p in irreps])


def channelwise_paths(in1: Sequence[Irrep], in2: Sequence[Irrep], allowed: Sequence[Irrep]) -> List[Tuple[int, int, Irrep]]:
    """All (i1, i2, ir_out) with ir_out in ``allowed`` (selection rules of O(3))."""
    paths = []
    allowed_set = {tuple(a) for a in allowed}
    for i1, (l1, p1) in enumerate(in1):
        for i2, (l2, p2) in enumerate(in2):
            for l3 in range(abs(l1 - l2), l1 + l2 + 1):
                ir = (l3, p1 * p2)
                if ir in allowed_set:
                    paths.append((i1, i2, ir))
    return paths


def clebsch_gordan_tensor(in1: Sequence[Irrep], in2: Sequence[Irrep], paths) -> torch.Tensor:
    """``W [dim1, dim2, dim_out]`` of e3nn's uuu TensorProduct with one output slot per path."""
    irreps_out = o3.Irreps([(1, ir) for _, _, ir in paths])
    instr = [(i1, i2, k, "uuu", False) for k, (i1, i2, _) in enumerate(paths)]
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        tp = o3.TensorProduct(as_e3nn(in1), as_e3nn(in2), irreps_out, instr)
        d1, d2 = irreps_dim(in1), irreps_dim(in2)
        x1 = torch.eye(d1).repeat_interleave(d2, dim=0)
        x2 = torch.eye(d2).repeat(d1, 1)
        with torch.no_grad():
            w = tp(x1, x2)
    finally:
        torch.set_default_dtype(prev)
    return w.reshape(d1, d2, -1)


class ChannelwiseTP(torch.nn.Module):
    """``out[e, c, :] = (x1[e, c, :] ⊗ x2[e, c, :]) @ W`` for all paths at once.

    Parameters
    ----------
    in1, in2 : list of (l, p)
        Irreps of one channel of each input (component layout, concatenated).
    allowed : list of (l, p)
        Output irreps to keep.
    """

    def __init__(self, in1: Sequence[Irrep], in2: Sequence[Irrep], allowed: Sequence[Irrep]):
        super().__init__()
        self.paths = channelwise_paths(in1, in2, allowed)
        w = clebsch_gordan_tensor(in1, in2, self.paths)
        self.d1, self.d2 = w.shape[0], w.shape[1]
        self.dim_out = w.shape[2]
        flat = w.reshape(self.d1 * self.d2, self.dim_out)
        self.register_buffer("weight", flat.to(torch.get_default_dtype()))
        used = torch.nonzero((flat != 0).any(dim=1)).flatten()
        self.compact = 2 * len(used) <= self.d1 * self.d2
        # derived from ``weight`` (not saved): the products that reach an output, and their rows of ``weight``
        self.register_buffer("rows1", used // self.d2, persistent=False)
        self.register_buffer("rows2", used % self.d2, persistent=False)
        self.register_buffer("weight_used", flat[used].to(torch.get_default_dtype()), persistent=False)
        # column ranges of each output irrep type, per path
        starts = []
        s = 0
        for _, _, (l, _) in self.paths:
            starts.append(s)
            s += 2 * l + 1
        self.path_starts = starts

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        e, c = x1.shape[0], x1.shape[1]
        if self.compact:
            return (x1.index_select(2, self.rows1) * x2.index_select(2, self.rows2)) @ self.weight_used.to(x1.dtype)
        outer = (x1.unsqueeze(-1) * x2.unsqueeze(-2)).reshape(e, c, self.d1 * self.d2)
        return outer @ self.weight.to(x1.dtype)

    def columns_of(self, ir: Irrep) -> List[int]:
        """Output columns of every path that produces irrep ``ir`` (path-major)."""
        cols: List[int] = []
        for start, (_, _, out) in zip(self.path_starts, self.paths):
            if out == ir:
                cols += list(range(start, start + 2 * ir[0] + 1))
        return cols


class _Mix(torch.nn.Module):
    """Channel mixing for one target irrep: ``[E, C*n_paths, d] -> [E, C, d]``."""

    def __init__(self, n_paths: int, channels: int, dim: int):
        super().__init__()
        self.n_paths = n_paths
        self.channels = channels
        self.dim = dim
        fan_in = max(channels * n_paths, 1)
        self.weight = torch.nn.Parameter(torch.randn(max(n_paths, 1) * channels, channels) / fan_in**0.5)

    def forward(self, block: torch.Tensor) -> torch.Tensor:
        e = block.shape[0]
        if self.n_paths == 0:
            return torch.zeros((e, self.channels, self.dim), dtype=block.dtype, device=block.device)
        b = block.reshape(e, self.channels, self.n_paths, self.dim).reshape(e, self.channels * self.n_paths, self.dim)
        return torch.einsum("eam,ab->ebm", b, self.weight)


class IrrepLinear(torch.nn.Module):
    """Equivariant linear map ``[E, C, path dims] -> [E, C, target dims]``: for each target irrep,
    mix the channels of every path producing it (a learned ``(C*n_paths) x C`` matrix per irrep)."""

    widths: List[int]

    def __init__(self, tp: ChannelwiseTP, targets: Sequence[Irrep], channels: int):
        super().__init__()
        mixes = []
        cols: List[int] = []
        widths: List[int] = []
        for l, p in [tuple(t) for t in targets]:
            c = tp.columns_of((l, p))
            mixes.append(_Mix(len(c) // (2 * l + 1), channels, 2 * l + 1))
            cols += c
            widths.append(len(c))
        self.register_buffer("cols", torch.tensor(cols, dtype=torch.long))
        self.widths = widths
        self.mixes = torch.nn.ModuleList(mixes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sel = x.index_select(2, self.cols)
        out: List[torch.Tensor] = []
        start = 0
        for k, mix in enumerate(self.mixes):
            w = self.widths[k]
            out.append(mix(sel[:, :, start : start + w]))
            start += w
        return torch.cat(out, dim=2)
