"""Species handling: atomic numbers -> contiguous species indices for the elements a model knows."""
from __future__ import annotations

from typing import List, Sequence

import torch
from ase.data import atomic_numbers as _ASE_Z, chemical_symbols


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


class SpeciesIndex(torch.nn.Module):
    """Map atomic numbers to species indices 0..S-1 (-1 for unsupported elements)."""

    def __init__(self, elements: Sequence[str]):
        super().__init__()
        self.elements = normalize_elements(elements)
        table = torch.full((119,), -1, dtype=torch.long)
        for k, sym in enumerate(self.elements):
            table[_ASE_Z[sym]] = k
        self.register_buffer("table", table)
        self.num_species = len(self.elements)

    def forward(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        return self.table[atomic_numbers]

    def check(self, atomic_numbers) -> None:
        """Raise a ValueError naming unsupported elements and the supported set."""
        z = torch.as_tensor(atomic_numbers, dtype=torch.long).reshape(-1)
        bad = sorted({int(v) for v in z[(z < 0) | (z > 118) | (self.table[z.clamp(0, 118)] < 0)].tolist()})
        if bad:
            names = [chemical_symbols[v] if 0 < v < 119 else str(v) for v in bad]
            from ..errors import UnsupportedElementError

            raise UnsupportedElementError(
                f"element(s) {', '.join(names)} not supported by this model; it knows {', '.join(self.elements)}. "
                "Use a model trained on these elements or remove those atoms from the ML region."
            )
