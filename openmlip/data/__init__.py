"""Data: the Structure record, SPICE HDF5 and extxyz readers and writers."""
from .extxyz import read_extxyz, write_extxyz
from .spice import (DFT_LABELS, SPICE_LABELS, XTB_LABELS, LabelKeys, ReadStats, SpiceFormatError, read_spice,
                    smiles_formal_charge, write_spice)
from .structure import Structure

__all__ = ["DFT_LABELS", "SPICE_LABELS", "XTB_LABELS", "LabelKeys", "ReadStats", "SpiceFormatError", "Structure",
           "read_extxyz", "read_spice", "smiles_formal_charge", "write_extxyz", "write_spice"]
