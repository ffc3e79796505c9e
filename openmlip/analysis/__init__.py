"""Trajectory analysis in the style of mdtraj's ``compute_*`` functions (lengths in nm, times in ps).

:mod:`openmlip.analysis.trajectory` holds the functions of an ``mdtraj.Trajectory`` (selections in mdtraj's
language), :mod:`openmlip.analysis.core` the array-level numerics, :mod:`openmlip.analysis.report` the
``openmlip analyze`` report (CSV, plots, Markdown).
"""
from .core import block_average, diffusion_coefficient, msd_fft, rdf, unwrap, yeh_hummer_correction
from .trajectory import (DEFAULT_R_MAX_NM, NM2_PER_PS_IN_1E5_CM2_PER_S, bonded_pairs, compute_bond_lengths, compute_msd,
                         compute_rdf, half_smallest_box_width, select, selection_syntax_error)

__all__ = ["DEFAULT_R_MAX_NM", "NM2_PER_PS_IN_1E5_CM2_PER_S", "bonded_pairs", "block_average", "compute_bond_lengths",
           "compute_msd", "compute_rdf", "diffusion_coefficient", "half_smallest_box_width", "msd_fft", "rdf", "select",
           "selection_syntax_error", "unwrap", "yeh_hummer_correction"]
