"""``systems/<name>/system.yaml``: what to simulate, how, what to measure and what to expect.

A spec is validated completely on load; every problem is a :class:`SpecError` naming the file, the key
and the fix.  Paths in a spec are relative to the folder holding ``system.yaml``.  Format::

    name: ammonium-water
    description: NH4+ and Cl- in TIP3P water; ML on NH4+ (a charged ML region)
    structure: ammonium-water.pdb            # .pdb | .xyz/.extxyz | {prmtop: x.prmtop, inpcrd: x.crd}
    forcefield: [amber14/tip3p.xml, ammonium.xml]   # PDB only: OpenMM built-ins or files here
    nonbonded: {method: PME, cutoff_nm: 0.9, constraints: HBonds, implicit_solvent: null}
    box_nm: null                             # xyz only: cubic box edge (else open boundaries)
    ml:
      selection: resname NH4                 # mdtraj selection, a list of indices, or "all"
      potential: openmlip-xtb-v7             # installed potential name or model file
      embedding: mechanical                  # mechanical | electrostatic | none (whole system ML)
      charge: 1                              # total charge of the ML region (default: from MM charges)
      formal_charges: [{selection: resname NH4 and element N, charge: 1}]   # optional
      precision: single                      # single | double
    md: {temperature_K: 300, pressure_bar: null, timestep_fs: 0.5, friction_per_ps: 1,
         minimize_iterations: 500, equilibrate_steps: 2000, steps: 10000, report_interval: 100,
         checkpoint_interval: 1000, seed: 0}
    smoke: {steps: 400, equilibrate_steps: 100, report_interval: 20, minimize_iterations: 50}
    analysis:
      bonds: [{name: nh, elements: N-H, selection: resname NH4}]
      rdf:   [{name: n_ow, a: resname NH4 and element N, b: water and element O, r_max_nm: 0.8}]
      msd:   [{name: nh4, selection: resname NH4 and element N}]   # optional: fit_window_ps: [0.5, 2.5],
                                                                  # viscosity_mPa_s: 0.32 (adds the Yeh-Hummer D_infinite)
    expected:
      - {observable: nh.mean_A, range: [0.98, 1.10], note: GFN2-xTB minimum 1.0296 Å}
      - {observable: nh4.D_1e-5_cm2_per_s, range: [0.2, 6], smoke: false}

``steps`` counts all MD steps including ``equilibrate_steps``; analyses use only the frames after
equilibration.  Equilibration runs with friction ``equilibrate_friction_per_ps`` (default 10/ps), production with
``friction_per_ps``: from a minimised structure (velocities drawn at the target temperature, half of that
kinetic energy soon goes into the potential) the kinetic energy relaxes at rate 2γ, so γ = 1/ps would leave
production starting ~15% below the target after 0.5 ps of equilibration; every report gives the production
temperature (``temperature.mean_K`` may be checked like any observable).  Selections are parsed on load (a
syntax error names its key), and each expected observable must be a number its analysis reports; an RDF's
``r_max_nm`` may not exceed half the smallest width of the structure's box (``box_nm`` or a PDB's CRYST1), and when
it is omitted it is the analysis default lowered, with a warning, to fit that box.  ``smoke`` overrides ``md`` for
a short check run (``--smoke``); an expectation with ``smoke: false`` is checked only in full runs.
"""
from __future__ import annotations

import difflib
import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .. import DEFAULT_POTENTIAL
from ..charges import spin_multiplicity, total_charge
from ..errors import OpenMLIPError, SpecError
from ..settings import NON_NEGATIVE_INT, POSITIVE_INT, POSITIVE_NUMBER, Rule, any_value, check_known, check_values
from ..units import FS_TO_PS

EMBEDDINGS = ("mechanical", "electrostatic", "none")
NONBONDED = ("PME", "NoCutoff", "CutoffPeriodic", "CutoffNonPeriodic", "Ewald")
CONSTRAINTS = (None, "HBonds", "AllBonds", "HAngles")
IMPLICIT = (None, "OBC1", "OBC2", "GBn", "GBn2", "HCT")


@dataclass(frozen=True)
class MDSettings:
    """How one MD run goes (``md:`` of a spec, ``smoke:`` and command-line overrides applied): built and checked once
    by :meth:`from_mapping`; the runner and the reports read these attributes."""

    temperature_K: float = 300.0
    pressure_bar: Optional[float] = None  # a MonteCarloBarostat at this pressure (None: constant volume)
    timestep_fs: float = 0.5
    friction_per_ps: float = 1.0
    equilibrate_friction_per_ps: float = 10.0
    minimize_iterations: int = 500
    equilibrate_steps: int = 0  # counted in steps
    steps: int = 1000
    report_interval: int = 100
    checkpoint_interval: int = 1000
    seed: int = 0
    max_energy_jump_kJmol: float = 1e4

    @classmethod
    def from_mapping(cls, values: Dict[str, Any], where: str) -> "MDSettings":
        """Settings from a mapping of the field names (a missing one takes its default); ``where`` (e.g.
        ``"system.yaml: md"``) begins every error."""
        check_known(values, [f.name for f in fields(cls)], where, SpecError)
        md = {**asdict(cls()), **check_values(values, MD_RULES, where, SpecError, optional=("pressure_bar",))}
        if md["checkpoint_interval"] % md["report_interval"]:
            raise _err(where, f"checkpoint_interval ({md['checkpoint_interval']}) must be a multiple of report_interval "
                              f"({md['report_interval']})")
        if md["equilibrate_steps"] >= md["steps"] or (md["steps"] - md["equilibrate_steps"]) // md["report_interval"] < 2:
            raise _err(where, f"steps ({md['steps']}) must exceed equilibrate_steps ({md['equilibrate_steps']}) "
                              f"by at least two report intervals ({md['report_interval']}) so that something is analysed")
        return cls(**md)

    @property
    def equilibration_ps(self) -> float:
        return self.equilibrate_steps * self.timestep_fs * FS_TO_PS


#: the rule of each MD setting (openmlip.settings)
MD_RULES: Dict[str, Rule] = {
    **{k: NON_NEGATIVE_INT for k in ("steps", "equilibrate_steps", "minimize_iterations", "seed")},
    **{k: POSITIVE_INT for k in ("report_interval", "checkpoint_interval")},
    **{k: POSITIVE_NUMBER for k in ("temperature_K", "timestep_fs", "friction_per_ps", "equilibrate_friction_per_ps",
                                    "max_energy_jump_kJmol", "pressure_bar")},
}
#: the ``md:`` keys of a spec and their defaults
MD_DEFAULTS: Dict[str, Any] = asdict(MDSettings())


@dataclass
class SystemSpec:
    path: Path
    name: str
    description: str
    structure: Union[str, Dict[str, str]]
    forcefield: List[str]
    nonbonded: Nonbonded
    box_nm: Optional[float]
    ml: MLRegion
    md: Dict[str, Any]
    smoke: Dict[str, Any]
    analysis: Dict[str, List[Dict[str, Any]]]
    expected: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.path.parent

    def md_settings(self, smoke: bool = False, **overrides) -> MDSettings:
        """The MD settings of a run: ``md:``, then ``smoke:`` for a smoke run, then the overrides that are not None."""
        md = dict(self.md)
        if smoke:
            md.update(self.smoke)
        md.update({k: v for k, v in overrides.items() if v is not None})
        return MDSettings.from_mapping(md, f"{self.path}: {'md/smoke' if smoke else 'md'}")

    def resume_settings(self, potential: Optional[str] = None) -> Dict[str, Any]:
        """Named settings of this spec that fix an MD run's Hamiltonian, for ``MDRunner(settings=...)``: the potential
        (name and model-file sha256), the ML region, charges, embedding and precision, the MM treatment, the force
        field and structure files (sha256).  A resume whose values differ is refused, each change named."""
        import hashlib

        from ..errors import ModelFileError
        from ..openmm.registry import resolve_potential

        def digest(path: Path) -> str:
            return hashlib.sha256(path.read_bytes()).hexdigest()[:16]

        name = potential or self.ml.potential
        try:
            model: Optional[Path] = resolve_potential(name, self.root)
        except ModelFileError:
            model = None
        files = [self.structure] if isinstance(self.structure, str) else list(self.structure.values())
        return {"potential": f"{Path(name).name} (model sha256 {digest(model) if model else 'unknown'})",
                **{f"ml.{k}": v for k, v in asdict(self.ml).items() if k != "potential"}, "nonbonded": asdict(self.nonbonded),
                "forcefield": [f"{f} ({digest(self.root / f)})" if (self.root / f).is_file() else f for f in self.forcefield],
                "structure": [f"{f} ({digest(self.root / f)})" for f in files], "box_nm": self.box_nm}

    def resolve(self, name: str) -> str:
        """A file named in the spec: relative to the spec's folder when it exists there, else as given."""
        p = self.root / name
        return str(p) if p.exists() else name


def _err(where: str, msg: str) -> SpecError:
    return SpecError(f"{where}: {msg}")


def check_keys(d: Any, allowed: Sequence[str], where: str, error: type = SpecError) -> Dict[str, Any]:
    """A section of a spec file as a dict ({} when absent), or ``error`` naming the unknown keys."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise error(f"{where}: must be a mapping of keys ({', '.join(allowed)}), got {type(d).__name__}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise error(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    return dict(d)


def _check_selection(selection: Any, file: str, where: str) -> None:
    """SpecError naming the key when an mdtraj selection string does not parse (checked before any MD)."""
    from ..analysis import selection_syntax_error

    if not isinstance(selection, str):
        raise _err(f"{file}: {where}", f"must be an mdtraj selection string, got {selection!r}")
    complaint = selection_syntax_error(selection)
    if complaint:
        raise _err(f"{file}: {where}", f"cannot parse selection {selection!r} ({complaint}); see mdtraj's atom selection language")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _structure_box_half_width(root: Path, structure: Union[str, Dict[str, str]], box_nm: Optional[float]) -> Optional[float]:
    """Half the smallest width (nm) of the starting box when the spec shows it (``box_nm`` or a PDB CRYST1), else None."""
    if box_nm is not None:
        return 0.5 * float(box_nm)
    if not (isinstance(structure, str) and structure.lower().endswith(".pdb")):
        return None
    import numpy as np
    from mdtraj.utils import lengths_and_angles_to_box_vectors

    from ..analysis import half_smallest_box_width

    with open(root / structure) as fh:
        for line in fh:
            if line.startswith("CRYST1"):
                try:
                    la, lb, lc, al, be, ga = (float(line[k:k + w]) for k, w in ((6, 9), (15, 9), (24, 9), (33, 7), (40, 7), (47, 7)))
                except ValueError:
                    return None
                box = np.array(lengths_and_angles_to_box_vectors(la / 10, lb / 10, lc / 10, al, be, ga))
                return half_smallest_box_width(box[None])
    return None


def _read_yaml(path: Union[str, Path]):
    """(the file, its mapping): a system.yaml path or a folder holding one."""
    import yaml

    p = Path(path)
    if p.is_dir():
        p = p / "system.yaml"
    if not p.is_file():
        hint = ""
        systems = Path(__file__).resolve().parents[2] / "systems"
        if systems.is_dir():
            names = sorted(d.name for d in systems.iterdir() if (d / "system.yaml").is_file())
            hint = f"; shipped systems: {', '.join('systems/' + n for n in names)}" if names else ""
        raise SpecError(f"system spec {str(path)!r} not found (give a system.yaml or a folder holding one{hint})")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return p, raw


def _check_structure(raw, f: str, root: Path):
    """The structure entry (a file name, or {prmtop, inpcrd}), its files present."""
    structure = raw["structure"]
    if isinstance(structure, str):
        files = [structure]
        if not structure.lower().endswith((".pdb", ".xyz", ".extxyz")):
            raise _err(f"{f}: structure", f"{structure!r}: use a .pdb, .xyz/.extxyz file or {{prmtop: ..., inpcrd: ...}}")
    else:
        structure = check_keys(structure, ("prmtop", "inpcrd"), f"{f}: structure")
        if set(structure) != {"prmtop", "inpcrd"}:
            raise _err(f"{f}: structure", "an Amber structure needs both prmtop and inpcrd")
        files = list(structure.values())
    for name in files:
        if not (root / name).is_file():
            raise _err(f"{f}: structure", f"file {name!r} not found in {root}")
    return structure


@dataclass(frozen=True)
class Nonbonded:
    """The MM treatment of a system (``nonbonded:`` of a spec, a free-energy leg's overrides applied): OpenMM's
    ``createSystem`` arguments, built and checked once by :meth:`from_mapping`."""

    method: str = "PME"  # NONBONDED
    cutoff_nm: float = 0.9
    constraints: Optional[str] = "HBonds"  # CONSTRAINTS
    rigid_water: bool = True
    implicit_solvent: Optional[str] = None  # IMPLICIT (Amber structures)

    @classmethod
    def from_mapping(cls, values: Dict[str, Any], where: str) -> "Nonbonded":
        nb = {**asdict(cls()), **check_keys(values, [x.name for x in fields(cls)], where)}
        for key, allowed in (("method", NONBONDED), ("constraints", CONSTRAINTS), ("implicit_solvent", IMPLICIT)):
            if nb[key] not in allowed:
                raise _err(f"{where}.{key}", f"{nb[key]!r} is not one of {', '.join(map(str, allowed))}")
        nb = check_values(nb, {"cutoff_nm": POSITIVE_NUMBER, "rigid_water": ("bool", "true or false", any_value)}, where,
                          SpecError)
        return cls(**nb)


def _check_nonbonded(raw, f: str):
    """(force field files, nonbonded settings)."""
    forcefield = raw.get("forcefield") or []
    if isinstance(forcefield, str):
        forcefield = [forcefield]
    return forcefield, Nonbonded.from_mapping(raw.get("nonbonded"), f"{f}: nonbonded")


@dataclass(frozen=True)
class MLRegion:
    """The ML region of a system (``ml:`` of a spec, a free-energy leg's overrides applied): built and checked once
    by :meth:`from_mapping`."""

    selection: Union[str, List[int]] = "all"  # an mdtraj selection, a list of atom indices, or "all"
    potential: str = DEFAULT_POTENTIAL  # an installed potential's name or a model file
    embedding: str = "mechanical"  # mechanical | electrostatic | none (the whole system ML)
    charge: Optional[float] = None  # total charge (None: from the MM charges)
    formal_charges: Optional[List[Dict[str, Any]]] = None  # [{selection, charge}]
    precision: str = "single"
    spin_multiplicity: int = 1

    @classmethod
    def from_mapping(cls, values: Dict[str, Any], where: str) -> "MLRegion":
        """The region from a mapping of its field names (a missing one takes its default); ``where`` (e.g.
        ``"system.yaml: ml"``) begins every error, a :class:`SpecError`."""
        ml = {**asdict(cls()), **check_keys(values, [x.name for x in fields(cls)], where)}
        if ml["embedding"] not in EMBEDDINGS:
            raise _err(f"{where}.embedding", f"{ml['embedding']!r} is not one of {', '.join(EMBEDDINGS)}")
        if ml["precision"] not in ("single", "double"):
            raise _err(f"{where}.precision", f"must be 'single' or 'double', got {ml['precision']!r}")
        if not isinstance(ml["potential"], str) or not ml["potential"]:
            raise _err(f"{where}.potential", f"must be an installed potential's name or a model file, got {ml['potential']!r}")
        try:  # the one charge-state rule of openmlip.charges (as for OpenMM and ASE), reported as a spec error
            if ml["charge"] is not None:
                ml["charge"] = total_charge(ml["charge"], "ml.charge")
            ml["spin_multiplicity"] = spin_multiplicity(ml["spin_multiplicity"], "ml.spin_multiplicity")
        except OpenMLIPError as exc:
            raise _err(where, str(exc)) from None
        if ml["embedding"] == "none" and ml["selection"] != "all":
            raise _err(where, "embedding 'none' means the whole system is ML: set selection: all (or choose an embedding)")
        if isinstance(ml["selection"], str) and ml["selection"] != "all":
            _check_selection(ml["selection"], where.rsplit(": ", 1)[0], "ml.selection")
        for k, fc in enumerate(ml["formal_charges"] or []):
            check_keys(fc, ("selection", "charge"), f"{where}.formal_charges[{k}]")
            if "selection" not in fc or "charge" not in fc:
                raise _err(f"{where}.formal_charges[{k}]", "needs selection and charge")
            if isinstance(fc["selection"], str) and fc["selection"] != "all":
                _check_selection(fc["selection"], where.rsplit(": ", 1)[0], f"ml.formal_charges[{k}].selection")
        return cls(**ml)


def _check_ml(raw, f: str, structure, forcefield) -> MLRegion:
    """The ML region of a spec, and what it asks of the rest of the spec."""
    ml = MLRegion.from_mapping(raw["ml"], f"{f}: ml")
    if ml.embedding != "none" and not forcefield and isinstance(structure, str) and structure.lower().endswith(".pdb"):
        raise _err(f"{f}: forcefield", "an ML/MM system from a PDB needs the MM force field files for the rest")
    return ml


# the observable every run has, from its state.csv: production temperature (see openmlip.md.report.temperature_summary)
TEMPERATURE = "temperature"
TEMPERATURE_OBSERVABLES = ("mean_K", "std_K", "slope_K_per_ps", "target_K")


def _check_analysis(raw, f: str) -> Dict[str, List[Dict[str, Any]]]:
    """The bonds/rdf/msd analyses, each named once, selections parsed."""
    analysis = check_keys(raw.get("analysis"), ("bonds", "rdf", "msd"), f"{f}: analysis")
    required = {"bonds": ("name", "elements"), "rdf": ("name", "a", "b"), "msd": ("name", "selection")}
    optional = {"bonds": ("selection",), "rdf": ("r_max_nm", "bin_width_nm"), "msd": ("fit_window_ps", "viscosity_mPa_s")}
    names = set()
    for kind in ("bonds", "rdf", "msd"):
        items = analysis.get(kind) or []
        if not isinstance(items, list):
            raise _err(f"{f}: analysis.{kind}", "must be a list")
        for k, item in enumerate(items):
            where = f"{f}: analysis.{kind}[{k}]"
            check_keys(item, required[kind] + optional[kind], where)
            missing = [r for r in required[kind] if r not in item]
            if missing:
                raise _err(where, f"missing key(s) {', '.join(missing)}")
            if item["name"] in names:
                raise _err(where, f"duplicate analysis name {item['name']!r}")
            if item["name"] == TEMPERATURE:
                raise _err(where, f"the name {TEMPERATURE!r} is the run's own temperature observable "
                           f"({TEMPERATURE}.mean_K, .std_K, .slope_K_per_ps); choose another name")
            names.add(item["name"])
            for key in {"bonds": ("selection",), "rdf": ("a", "b"), "msd": ("selection",)}[kind]:
                if item.get(key) is not None:
                    _check_selection(item[key], f, f"analysis.{kind}[{k}].{key}")
            for key in ("r_max_nm", "bin_width_nm"):
                if key in item and not _positive(item[key]):
                    raise _err(f"{where}.{key}", f"must be a positive number of nm, got {item[key]!r}")
            if "viscosity_mPa_s" in item and not _positive(item["viscosity_mPa_s"]):
                raise _err(f"{where}.viscosity_mPa_s", f"must be a positive viscosity in mPa·s (TIP3P water at 300 K: "
                           f"0.32), got {item['viscosity_mPa_s']!r}")
            fw = item.get("fit_window_ps")
            if fw is not None and not (isinstance(fw, list) and len(fw) == 2 and all(_positive(x) or x == 0 for x in fw)
                                       and fw[0] < fw[1]):
                raise _err(f"{where}.fit_window_ps", f"must be [low, high] in ps with 0 <= low < high, got {fw!r}")
            if kind == "bonds":
                parts = str(item["elements"]).replace("–", "-").split("-")
                if len(parts) != 2 or not all(parts):
                    raise _err(where, f"elements must look like N-H, got {item['elements']!r}")
                item["elements"] = tuple(parts)
        analysis[kind] = items
    for kind in ("bonds", "rdf", "msd"):
        analysis.setdefault(kind, [])
    return analysis


def _check_expected(raw, f: str, analysis) -> List[Dict[str, Any]]:
    """Expected observables, each naming an analysis and a number it reports (checked here, before any MD)."""
    from ..analysis.report import OBSERVABLES, VISCOSITY_OBSERVABLES

    keys = {item["name"]: (kind, item) for kind in ("bonds", "rdf", "msd") for item in analysis[kind]}
    names = set(keys) | {TEMPERATURE}
    expected = raw.get("expected") or []
    if not isinstance(expected, list):
        raise _err(f"{f}: expected", "must be a list of {observable, range, note, smoke}")
    for k, e in enumerate(expected):
        where = f"{f}: expected[{k}]"
        check_keys(e, ("observable", "range", "note", "smoke"), where)
        if "observable" not in e or "range" not in e:
            raise _err(where, "needs observable (analysis-name.key) and range [low, high]")
        if str(e["observable"]).split(".", 1)[0] not in names:
            raise _err(where, f"observable {e['observable']!r} names no analysis; analyses: {', '.join(sorted(names)) or 'none'}")
        name, _, key = str(e["observable"]).partition(".")
        kind, item = keys.get(name, ("temperature", {}))
        known = TEMPERATURE_OBSERVABLES if name == TEMPERATURE else OBSERVABLES[kind]
        if key not in known:
            close = difflib.get_close_matches(key, known, 1)
            raise _err(where, f"observable {e['observable']!r}: {name} ({kind}) reports no {key!r}"
                       + (f" (did you mean {name}.{close[0]}?)" if close else "") + f"; it reports {', '.join(known)}")
        if key in VISCOSITY_OBSERVABLES and item.get("viscosity_mPa_s") is None:
            raise _err(where, f"observable {e['observable']!r} needs viscosity_mPa_s in the msd entry {name!r}")
        r = e["range"]
        if not (isinstance(r, list) and len(r) == 2 and all(isinstance(x, (int, float)) for x in r) and r[0] < r[1]):
            raise _err(where, f"range must be [low, high] with low < high, got {r!r}")
    return expected


def _check_rdf_ranges(analysis, f: str, root: Path, structure, box) -> None:
    """RDF ranges within half the structure's smallest box width (the default lowered to fit, with a warning)."""
    if analysis["rdf"]:
        from ..analysis import DEFAULT_R_MAX_NM

        limit = _structure_box_half_width(root, structure, box)
        for k, item in enumerate(analysis["rdf"] if limit is not None else []):
            width = float(item.get("bin_width_nm", 0.005))
            if "r_max_nm" not in item and DEFAULT_R_MAX_NM > limit:
                item["r_max_nm"] = math.floor(limit / width) * width
                warnings.warn(f"{f}: analysis.rdf[{k}]: r_max_nm lowered from the default {DEFAULT_R_MAX_NM:g} nm to "
                              f"{item['r_max_nm']:.4g} nm, half the smallest box width", UserWarning, stacklevel=3)
            elif float(item.get("r_max_nm", DEFAULT_R_MAX_NM)) > limit * (1 + 1e-6):
                raise _err(f"{f}: analysis.rdf[{k}].r_max_nm", f"{item['r_max_nm']:g} nm exceeds half the smallest box width "
                           f"({limit:.4g} nm), beyond which the minimum image misses pairs and g(r) is wrong: use at most "
                           f"{limit:.4g} nm")


def load_spec(path: Union[str, Path]) -> SystemSpec:
    """Load and validate a system spec: a ``system.yaml`` file or a folder that holds one."""
    p, raw = _read_yaml(path)
    f = str(p)
    raw = check_keys(raw, ("name", "description", "structure", "forcefield", "nonbonded", "box_nm", "ml", "md",
                            "smoke", "analysis", "expected", "free_energy"), f)
    for key in ("name", "structure", "ml"):
        if key not in raw:
            raise _err(f, f"missing required key {key!r}")
    root = p.parent
    structure = _check_structure(raw, f, root)
    forcefield, nonbonded = _check_nonbonded(raw, f)
    ml = _check_ml(raw, f, structure, forcefield)
    md = dict(MD_DEFAULTS)
    md.update(check_keys(raw.get("md"), tuple(MD_DEFAULTS), f"{f}: md"))
    smoke = check_keys(raw.get("smoke"), tuple(MD_DEFAULTS), f"{f}: smoke")
    MDSettings.from_mapping(md, f"{f}: md")
    MDSettings.from_mapping({**md, **smoke}, f"{f}: smoke")

    analysis = _check_analysis(raw, f)
    expected = _check_expected(raw, f, analysis)
    box = raw.get("box_nm")
    if box is not None and not _positive(box):
        raise _err(f"{f}: box_nm", f"must be a positive number (nm) or null, got {box!r}")
    _check_rdf_ranges(analysis, f, root, structure, box)
    return SystemSpec(path=p.resolve(), name=str(raw["name"]), description=str(raw.get("description", "")),
                      structure=structure, forcefield=list(forcefield), nonbonded=nonbonded, box_nm=box, ml=ml, md=md,
                      smoke=smoke, analysis=analysis, expected=expected)
