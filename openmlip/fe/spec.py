"""The ``free_energy:`` section of ``systems/<name>/system.yaml`` and the interpolating System of each leg.

Format (every key optional except ``legs``)::

    free_energy:
      description: ΔG(MM → ML/MM) of p-xylene, in water and in T4L99A
      legs:                         # one calculation each; keys override the spec's own
        solvent: {structure: {prmtop: ligand.prmtop, inpcrd: ligand.crd}}
        complex: {}                 # the spec as it is
        # also: forcefield, nonbonded (merged), box_nm, ml (merged: selection, embedding, charge, ...)
      difference: [complex, solvent]   # ΔΔG = ΔG(complex) − ΔG(solvent), errors in quadrature
      settings:                     # openmlip.fe.engine.FESettings; temperature_K defaults to md.temperature_K
        lambdas: [0, 0.1, ..., 1]   # or windows: 11 (evenly spaced)
        timestep_fs: 1.0
        samples: 500
        ...
      smoke: {samples: 20, ...}     # overrides of settings for --smoke

λ is openmm-ml's ``lambda_interpolate``: 0 is the MM System, 1 the ML/MM System of the spec's
``ml:`` section (its embedding, charge, potential).  ``embedding: none`` (all-ML) has no MM end state
and is refused.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ..errors import ConfigError, SpecError
from ..md.spec import MLRegion, Nonbonded, check_keys
from .engine import FESettings

LEG_KEYS = ("description", "structure", "forcefield", "nonbonded", "box_nm", "ml")
SECTION_KEYS = ("description", "legs", "difference", "settings", "smoke")
EMBEDDINGS = ("mechanical", "electrostatic")


@dataclass
class FESpec:
    """A system spec's ``free_energy`` section, validated."""

    system: Any                      # openmlip.md.spec.SystemSpec (the spec without the section)
    description: str
    legs: Dict[str, Dict[str, Any]]  # leg name -> overrides
    difference: Optional[Tuple[str, str]]
    settings: Dict[str, Any]
    smoke: Dict[str, Any]

    @property
    def path(self) -> Path:
        return self.system.path

    def fe_settings(self, smoke: bool = False, **overrides) -> FESettings:
        d = dict(self.settings)
        if smoke:
            if {"windows", "lambdas"} & set(self.smoke):  # the smoke schedule replaces the full one
                d.pop("windows", None)
                d.pop("lambdas", None)
            d.update(self.smoke)
        d.update({k: v for k, v in overrides.items() if v is not None})
        return _settings(d, f"{self.path}: free_energy.{'smoke' if smoke else 'settings'}")

    def leg_spec(self, leg: str):
        """The SystemSpec of a leg: the spec with the leg's overrides."""
        if leg not in self.legs:
            raise ConfigError(f"{self.path}: free_energy has no leg {leg!r}; legs: {', '.join(self.legs)}")
        o = self.legs[leg]
        s = self.system
        ml = MLRegion.from_mapping({**dataclasses.asdict(s.ml), **(o.get("ml") or {})},
                                   f"{self.path}: free_energy.legs.{leg}.ml")
        nb = Nonbonded.from_mapping({**dataclasses.asdict(s.nonbonded), **(o.get("nonbonded") or {})},
                                    f"{self.path}: free_energy.legs.{leg}.nonbonded")
        return dataclasses.replace(
            s, name=f"{s.name}/{leg}", description=o.get("description", s.description),
            structure=o.get("structure", s.structure),
            forcefield=list(o["forcefield"]) if "forcefield" in o else list(s.forcefield),
            nonbonded=nb, box_nm=o.get("box_nm", s.box_nm), ml=ml)


def _err(where: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {msg}")


def _settings(d: Dict[str, Any], where: str) -> FESettings:
    d = dict(d)
    if "windows" in d:
        n = d.pop("windows")
        if "lambdas" in d:
            raise _err(where, "give lambdas or windows, not both")
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise _err(where, f"windows must be an integer >= 2, got {n!r}")
        d["lambdas"] = [round(float(x), 10) for x in np.linspace(0.0, 1.0, n)]
    try:
        return FESettings.from_dict(d, where)
    except TypeError as exc:  # pragma: no cover  (from_dict names unknown keys first)
        raise _err(where, str(exc)) from None
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def _load_system_spec(path: Path):
    """The spec, validated by :func:`openmlip.md.spec.load_spec` (which allows the free_energy key)."""
    from ..md.spec import load_spec

    return load_spec(path)


def load_fe_spec(path: Union[str, Path]) -> FESpec:
    """Load ``system.yaml`` (or a folder holding one) and validate its ``free_energy`` section."""
    import yaml

    from ..md.spec import load_spec

    p = Path(path)
    if p.is_dir():
        p = p / "system.yaml"
    if not p.is_file():
        load_spec(p)  # raises the spec loader's error (lists the shipped systems)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    f = str(p)
    if not isinstance(raw, dict) or "free_energy" not in raw:
        raise _err(f, "no free_energy section: add one (see docs/free_energy.md) to run free-energy corrections")
    system = _load_system_spec(p)
    sec = check_keys(raw["free_energy"], SECTION_KEYS, f"{f}: free_energy", error=ConfigError)
    legs_raw = sec.get("legs")
    if not isinstance(legs_raw, dict) or not legs_raw:
        raise _err(f"{f}: free_energy.legs", "needs at least one leg: {name: {overrides}}")
    legs = {}
    for name, o in legs_raw.items():
        where = f"{f}: free_energy.legs.{name}"
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise _err(where, "leg names are letters, digits, '-' and '_' (they name folders)")
        o = check_keys(o, LEG_KEYS, where, error=ConfigError)
        if "structure" in o:
            st = o["structure"]
            files = [st] if isinstance(st, str) else list(
                check_keys(st, ("prmtop", "inpcrd"), f"{where}.structure", error=ConfigError).values())
            if not isinstance(st, str) and set(st) != {"prmtop", "inpcrd"}:
                raise _err(f"{where}.structure", "an Amber structure needs both prmtop and inpcrd")
            for name_ in files:
                if not (system.root / name_).is_file():
                    raise _err(f"{where}.structure", f"file {name_!r} not found in {system.root}")
        nb = check_keys(o.get("nonbonded"), [x.name for x in dataclasses.fields(Nonbonded)], f"{where}.nonbonded",
                        error=ConfigError)
        try:
            Nonbonded.from_mapping({**dataclasses.asdict(system.nonbonded), **nb}, f"{where}.nonbonded")
        except SpecError as exc:
            raise ConfigError(str(exc)) from None
        ml = check_keys(o.get("ml"), [x.name for x in dataclasses.fields(MLRegion)], f"{where}.ml", error=ConfigError)
        emb = ml.get("embedding", system.ml.embedding)
        if emb not in EMBEDDINGS:
            raise _err(f"{where}.ml.embedding", f"{emb!r}: a free-energy correction needs an MM end state; "
                       f"use one of {', '.join(EMBEDDINGS)}")
        try:  # the leg's region is checked as the spec's is (its charge state by the one resolver)
            MLRegion.from_mapping({**dataclasses.asdict(system.ml), **ml}, f"{where}.ml")
        except SpecError as exc:
            raise ConfigError(str(exc)) from None
        legs[name] = o
    diff = sec.get("difference")
    if diff is not None:
        if not (isinstance(diff, list) and len(diff) == 2 and all(d in legs for d in diff) and diff[0] != diff[1]):
            raise _err(f"{f}: free_energy.difference", f"must name two different legs [minuend, subtrahend] of "
                       f"{', '.join(legs)}; got {diff!r}")
        diff = (diff[0], diff[1])
    settings = check_keys(sec.get("settings"), [x.name for x in dataclasses.fields(FESettings)] + ["windows"],
                          f"{f}: free_energy.settings", error=ConfigError)
    settings.setdefault("temperature_K", float(system.md["temperature_K"]))
    smoke = check_keys(sec.get("smoke"), [x.name for x in dataclasses.fields(FESettings)] + ["windows"],
                       f"{f}: free_energy.smoke", error=ConfigError)
    spec = FESpec(system=system, description=str(sec.get("description", "")), legs=legs, difference=diff,
                  settings=settings, smoke=smoke)
    spec.fe_settings(False)  # validate both sets now, not after hours of compute
    spec.fe_settings(True)
    return spec


def build_leg(spec: FESpec, leg: str, potential: Optional[str] = None) -> Dict[str, Any]:
    """The interpolating ML/MM System of a leg (``lambda_interpolate``: 0 = MM, 1 = ML/MM), built by the
    same route as ``openmlip md`` (:func:`openmlip.md.build.build_system`)."""
    import warnings

    from ..md.build import build_system

    leg_spec = spec.leg_spec(leg)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
        built = build_system(leg_spec, potential, interpolate=True)
    built["spec"] = leg_spec
    return built


def leg_positions(built: Dict[str, Any]) -> np.ndarray:
    import openmm.unit as u

    return np.asarray(built["positions"].value_in_unit(u.nanometer))


def legs_of(spec: FESpec, legs: Optional[List[str]]) -> List[str]:
    if not legs:
        return list(spec.legs)
    bad = [x for x in legs if x not in spec.legs]
    if bad:
        raise ConfigError(f"{spec.path}: no leg(s) {', '.join(bad)} in free_energy.legs ({', '.join(spec.legs)})")
    return list(legs)
