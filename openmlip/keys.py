"""Keys of the atomic-data dictionary, defined once (see docs/design.md for shapes and units)."""
from typing import Final

POSITIONS: Final[str] = "pos"  # [N, 3] float, Å
ATOMIC_NUMBERS: Final[str] = "atomic_numbers"  # [N] int64
BATCH: Final[str] = "batch"  # [N] int64, structure index
TOTAL_CHARGE: Final[str] = "total_charge"  # [B] float, e
SPIN_MULTIPLICITY: Final[str] = "spin_multiplicity"  # [B] float, 2S+1
FORMAL_CHARGES: Final[str] = "formal_charges"  # [N] float, e (optional input)
CELL: Final[str] = "cell"  # [B, 3, 3] float, Å, rows are lattice vectors
PBC: Final[str] = "pbc"  # [B, 3] bool
EDGE_INDEX: Final[str] = "edge_index"  # [2, E] int64 (centre, neighbour)
EDGE_SHIFT: Final[str] = "edge_shift"  # [E, 3] float, Å
ENERGY: Final[str] = "energy"  # [B] float, eV
ATOMIC_ENERGIES: Final[str] = "atomic_energies"  # [N] float, eV
FORCES: Final[str] = "forces"  # [N, 3] float, eV/Å
CHARGES: Final[str] = "charges"  # [N] float, e

# training batches: the model inputs above plus the reference labels (openmlip.train.batching)
NUM_ATOMS: Final[str] = "num_atoms"  # [B] float, atoms per structure
ENERGY_REF: Final[str] = "energy_ref"  # [B] float, eV
FORCES_REF: Final[str] = "forces_ref"  # [N, 3] float, eV/Å
CHARGES_REF: Final[str] = "charges_ref"  # [N] float, e
#: the keys of a batch that are model inputs
MODEL_INPUTS: Final = (POSITIONS, ATOMIC_NUMBERS, BATCH, TOTAL_CHARGE, SPIN_MULTIPLICITY, FORMAL_CHARGES)
