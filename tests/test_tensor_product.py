"""The fused channel-wise tensor product (openmlip.nn.tensor_product) block by block.

Allegro's layers multiply with one Clebsch-Gordan tensor ``W [d1, d2, d_out]`` extracted from e3nn by
evaluating a ``TensorProduct`` on basis vectors.  These tests check that tensor against e3nn's references
directly (``o3.wigner_3j`` per path, a separate ``o3.TensorProduct`` per path, the paths of
``o3.FullTensorProduct``) and the fused product's equivariance with ``e3nn.util.test.assert_equivariant``,
for the irreps the model builds (first, middle and last layer; l_max 1..3; with and without both parities).
"""
from __future__ import annotations

import contextlib
import functools
import math

import pytest
import torch
from e3nn import o3
from e3nn.util.test import assert_equivariant

from openmlip.models.allegro import irrep_list
from openmlip.nn.tensor_product import ChannelwiseTP, as_e3nn, channelwise_paths, clebsch_gordan_tensor


@contextlib.contextmanager
def _float64_default():
    """e3nn builds its Wigner matrices in torch's default dtype: float64 for 1e-12-level comparisons."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(prev)


def _layer_irreps():
    """(in1, in2, allowed) of the Allegro layer kinds: first (in1 = spherical harmonics), middle, last.  Without
    both parities the first layer's irreps are the middle one's; l_max 3 holds every (l1, l2, l3) of l_max 1, 2."""
    cases = []
    for l_max, parity, kinds in ((1, False, ("middle",)), (2, True, ("first", "middle", "last")), (3, False, ("middle", "last"))):
        sh = irrep_list(l_max, False)
        v = irrep_list(l_max, parity)
        middle = sorted(set(v) | {(0, 1)})
        by_kind = {"first": (sh, sh, middle), "middle": (v, sh, middle), "last": (v, sh, [(0, 1)])}
        cases += [pytest.param(*by_kind[k], id=f"{k}-l{l_max}{'-parity' if parity else ''}") for k in kinds]
    return cases


@functools.lru_cache(maxsize=None)
def _single_path_tp(ir1, ir2, ir3, channels):
    """e3nn's TensorProduct of one "uuu" path ``channels x ir1 ⊗ channels x ir2 -> channels x ir3`` (float64)."""
    with _float64_default():
        return o3.TensorProduct(o3.Irreps([(channels, ir1)]), o3.Irreps([(channels, ir2)]), o3.Irreps([(channels, ir3)]),
                                [(0, 0, 0, "uuu", False)])


def _offsets(irreps):
    out = [0]
    for l, _ in irreps:
        out.append(out[-1] + 2 * l + 1)
    return out


@pytest.mark.parametrize("in1,in2,allowed", _layer_irreps())
def test_paths_are_those_of_e3nn_full_tensor_product(in1, in2, allowed):
    """The selection rules (|l1 - l2| <= l3 <= l1 + l2, p3 = p1 p2, output kept) give e3nn's paths."""
    paths = channelwise_paths(in1, in2, allowed)
    with _float64_default():
        full = o3.FullTensorProduct(as_e3nn(in1), as_e3nn(in2), filter_ir_out=[o3.Irrep(l, p) for l, p in allowed])
    theirs = sorted((ins.i_in1, ins.i_in2, (full.irreps_out[ins.i_out].ir.l, full.irreps_out[ins.i_out].ir.p))
                    for ins in full.instructions)
    assert sorted(paths) == theirs and len(paths) == len(set(paths)) > 0


@pytest.mark.parametrize("in1,in2,allowed", _layer_irreps())
def test_clebsch_gordan_tensor_is_wigner_3j_per_path(in1, in2, allowed):
    """``W`` is, path by path, ``sqrt(2 l3 + 1) * o3.wigner_3j(l1, l2, l3)`` (e3nn's component normalisation,
    one path per output slot) in the rows of (i1, i2) and the columns of the path, and zero elsewhere."""
    paths = channelwise_paths(in1, in2, allowed)
    W = clebsch_gordan_tensor(in1, in2, paths)
    o1, o2 = _offsets(in1), _offsets(in2)
    assert W.dtype == torch.float64 and W.shape == (o1[-1], o2[-1], sum(2 * l + 1 for _, _, (l, _) in paths))
    expected = torch.zeros_like(W)
    col = 0
    for i1, i2, (l3, _) in paths:
        l1, l2 = in1[i1][0], in2[i2][0]
        expected[o1[i1]:o1[i1 + 1], o2[i2]:o2[i2 + 1], col:col + 2 * l3 + 1] = \
            math.sqrt(2 * l3 + 1) * o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        col += 2 * l3 + 1
    torch.testing.assert_close(W, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("in1,in2,allowed", _layer_irreps())
def test_fused_product_equals_e3nn_tensor_product_per_path(in1, in2, allowed):
    """For random inputs (5 edges x 3 channels, float64) the fused product's columns of each path equal a
    separate e3nn ``TensorProduct`` of that path alone ("uuu", 3 channels) and the explicit contraction
    ``sqrt(2 l3 + 1) Σ_ij w3j_ijk x1_i x2_j``."""
    E, C = 5, 3
    with _float64_default():
        tp = ChannelwiseTP(in1, in2, allowed)
        gen = torch.Generator().manual_seed(0)
        o1, o2 = _offsets(in1), _offsets(in2)
        x1 = torch.randn(E, C, o1[-1], generator=gen)
        x2 = torch.randn(E, C, o2[-1], generator=gen)
        fused = tp(x1, x2)
        assert fused.dtype == torch.float64 and fused.shape == (E, C, tp.dim_out)
        for start, (i1, i2, (l3, p3)) in zip(tp.path_starts, tp.paths):
            (l1, p1), (l2, p2) = in1[i1], in2[i2]
            a = x1[:, :, o1[i1]:o1[i1 + 1]]
            b = x2[:, :, o2[i2]:o2[i2 + 1]]
            got = fused[:, :, start:start + 2 * l3 + 1]
            tp = _single_path_tp((l1, p1), (l2, p2), (l3, p3), C)
            ref = tp(a.reshape(E, -1), b.reshape(E, -1)).reshape(E, C, 2 * l3 + 1)  # e3nn: channel-major layout
            what = f"path {l1}{'eo'[p1 < 0]} x {l2}{'eo'[p2 < 0]} -> {l3}{'eo'[p3 < 0]}"
            torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12, msg=what)
            w3j = o3.wigner_3j(l1, l2, l3)
            explicit = math.sqrt(2 * l3 + 1) * torch.einsum("ijk,eci,ecj->eck", w3j, a, b)
            torch.testing.assert_close(got, explicit, rtol=1e-12, atol=1e-12, msg=what)


@pytest.mark.parametrize("in1,in2,allowed", _layer_irreps())
def test_fused_product_is_equivariant(in1, in2, allowed):
    """``tp(D1 x1, D2 x2) = D_out tp(x1, x2)`` for a random rotation and a random improper rotation
    (e3nn's ``assert_equivariant``; parity-odd irreps change sign under inversion)."""
    E, C = 4, 2
    with _float64_default(), torch.random.fork_rng():
        torch.manual_seed(1)
        tp = ChannelwiseTP(in1, in2, allowed)
        irreps_out = o3.Irreps([(1, ir) for _, _, ir in tp.paths])
        x1 = torch.randn(E, C, as_e3nn(in1).dim)
        x2 = torch.randn(E, C, as_e3nn(in2).dim)
        errors = assert_equivariant(tp, args_in=[x1, x2], irreps_in=[as_e3nn(in1), as_e3nn(in2)], irreps_out=[irreps_out],
                                    tolerance=1e-9, ntrials=2)
    assert set(errors) == {(0, False), (1, False)}  # proper and improper rotations were both tested


@pytest.mark.parametrize("in1,in2,allowed", _layer_irreps())
def test_compact_product_equals_the_dense_one_with_gradients(in1, in2, allowed):
    """Where at most half of the ``d1*d2`` products reach an output (a last layer keeping scalars) only those are
    formed; values and first and second derivatives equal the dense outer-product matmul's, and the saved state
    is ``weight`` alone (state dicts of either path load into the other)."""
    E, C = 6, 3
    with _float64_default():
        tp = ChannelwiseTP(in1, in2, allowed)
        rows_used = int((tp.weight != 0).any(dim=1).sum())
        assert tp.compact == (2 * rows_used <= tp.d1 * tp.d2)
        assert tp.compact == (allowed == [(0, 1)])  # the last layer, and only it
        assert list(tp.state_dict()) == ["weight"]
        gen = torch.Generator().manual_seed(2)
        x1 = torch.randn(E, C, tp.d1, generator=gen, requires_grad=True)
        x2 = torch.randn(E, C, tp.d2, generator=gen, requires_grad=True)
        probe = torch.randn(E, C, tp.dim_out, generator=gen)

        def dense(a, b):
            return (a.unsqueeze(-1) * b.unsqueeze(-2)).reshape(E, C, -1) @ tp.weight

        results = []
        for f in (tp, dense):
            out = f(x1, x2)
            g1, g2 = torch.autograd.grad((out * probe).sum(), (x1, x2), create_graph=True)
            h1, h2 = torch.autograd.grad((g1.pow(2).sum() + (g1 * g2.sum(-1, keepdim=True)).sum()), (x1, x2))
            results.append((out, g1, g2, h1, h2))
        for got, ref in zip(*results):
            torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
