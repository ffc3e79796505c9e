"""Species handling: atomic numbers -> contiguous species indices for the elements a model knows."""
from __future__ import annotations

from typing import List, Sequence

import torch
from ase.data import atomic_numbers as _ASE_Z, chemical_symbols

from ..errors import UnsupportedElementError


def normalize_elements(elements: Sequence) -> List[str]:
    """Element symbols (or atomic numbers) -> list of symbols, validated, order kept."""
    out = []
    for e in elements:
        if isinstance(e, (int,)) and not isinstance(e, bool):
            if not 0 < e < len(chemical_symbols):
                raise ValueError(f"atomic number {e} is not an element")
            sym = chemical_symbols[e]
        else:
            sym = str(e).strip().capitalize()
            if sym not in _ASE_Z or sym == "X":
                raise ValueError(f"unknown element symbol {e!r}")
        if sym in out:
            raise ValueError(f"element {sym} listed twice")
        out.append(sym)
    if not out:
        raise ValueError("a model needs at least one element")
    return out


def check_elements(elements: Sequence[str], atomic_numbers) -> None:
    """Raise :class:`UnsupportedElementError` naming the atomic numbers not among ``elements`` (symbols)
    and the supported set; also for non-integral or out-of-range atomic numbers."""
    values = [float(v) for v in torch.as_tensor(atomic_numbers).reshape(-1).tolist()]
    known = {_ASE_Z[e] for e in elements}
    bad = sorted({v for v in values if v != int(v) or int(v) not in known})
    if bad:
        names = [chemical_symbols[int(v)] if v == int(v) and 0 < v < len(chemical_symbols) else f"{v:g}" for v in bad]
        raise UnsupportedElementError(
            f"element(s) {', '.join(names)} not supported by this model; it knows {', '.join(elements)}. "
            "Use a model trained on these elements or remove those atoms from the ML region."
        )


class SpeciesIndex(torch.nn.Module):
    """Map atomic numbers to species indices 0..S-1; an unsupported atomic number raises in-graph
    (:class:`UnsupportedElementError`) instead of indexing out of range."""

    def __init__(self, elements: Sequence[str]):
        super().__init__()
        self.elements = normalize_elements(elements)
        table = torch.full((119,), -1, dtype=torch.long)
        for k, sym in enumerate(self.elements):
            table[_ASE_Z[sym]] = k
        self.register_buffer("table", table)
        self.num_species = len(self.elements)
        self.symbols: List[str] = list(chemical_symbols)
        #: raise on an unknown atomic number (a host synchronisation); callers that checked the elements
        #: once before (the OpenMM module in a CUDA graph) turn it off
        self.validate = True

    def forward(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        z = atomic_numbers.clamp(0, self.table.shape[0] - 1)
        species = self.table[z]
        if not self.validate:
            return species.clamp(min=0)
        bad = (species < 0) | (z != atomic_numbers)
        if bool(bad.any()):
            found: List[int] = torch.unique(atomic_numbers[bad]).tolist()
            names = [self.symbols[v] if 0 < v < len(self.symbols) else str(v) for v in found]
            raise UnsupportedElementError(
                "element(s) {} not supported by this model; it knows {}. Use a model trained on these elements "
                "or remove those atoms.".format(", ".join(names), ", ".join(self.elements))
            )
        return species

    def check(self, atomic_numbers) -> None:
        """Raise :class:`UnsupportedElementError` naming unsupported elements and the supported set."""
        check_elements(self.elements, atomic_numbers)
