"""Command line: ``openmlip doctor | demo | data generate | train | deploy | import | md | run | analyze | plugin | fe``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import List, Optional

from . import DEFAULT_POTENTIAL
from ._io import check_not_input, check_replaceable, writable_dir
from .errors import ConfigError, OpenMLIPError

_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def _positive_int(value: int, option: str, meaning: str) -> int:
    if value < 1:
        raise ConfigError(f"{option} {value}: must be a positive integer ({meaning}), e.g. {option} 1")
    return value


def _cmd_doctor(args) -> int:
    from .doctor import main

    return main(as_json=args.json)


def _cmd_demo(args) -> int:
    from .demo import run_demo

    _positive_int(args.threads, "--threads", "CPU threads for torch and OpenMM")
    _positive_int(args.steps, "--steps", "MD steps")
    writable_dir(args.out, "demo output")
    s = run_demo(Path(args.out), steps=args.steps, threads=args.threads, seed=args.seed, progress=not args.quiet,
                 model=args.model)
    print(
        f"MD of {s['atoms']} atoms (total charge {s['total_charge']:+g}) with a TorchForce on the {s['platform']} platform: "
        f"{s['steps']} steps at {s['ms_per_step']:.2f} ms/step ({s['threads']['torch']} torch / {s['threads']['openmm']} OpenMM thread)."
    )
    print(f"OpenMM energy {s['energy_openmm_kJmol']:.6f} kJ/mol vs model {s['energy_model_kJmol']:.6f} kJ/mol "
          f"(relative difference {s['energy_rel_diff']:.1e}); final energy finite: {s['final_energy_finite']}.")
    print(f"Model: {s['model']} ({s['model_note']}).")
    print(f"NH4+ N–H bond length over the run: {s['nh_bond_A']['mean']:.4f} ± {s['nh_bond_A']['std']:.4f} Å "
          f"({s['nh_bond_A']['frames']} frames; GFN2-xTB gas-phase minimum 1.0296 Å).")
    print(f"Outputs in {Path(args.out).resolve()}: md/ (trajectory.h5, state.csv, run.json: the runner's outputs), "
          "summary.json" + (", model.pt (the random model)" if args.model == "random" else ""))
    return 0 if s["final_energy_finite"] and s["energy_rel_diff"] < 1e-4 else 1


def _cmd_plugin(args) -> int:
    from .plugin import create_plugin

    notes, why = "", None
    if args.notes:
        try:
            notes = Path(args.notes).read_text(encoding="utf-8")
        except OSError as exc:
            why = exc.strerror or str(exc)
        except UnicodeDecodeError:
            why = "not UTF-8 text"
        if why:
            raise ConfigError(f"--notes {args.notes}: cannot read it ({why}); give a UTF-8 Markdown file")
    out = create_plugin(args.name, args.model, args.out or f"openmlip-plugin-{args.name}", args.description,
                        args.overwrite, args.evaluation, notes)
    print(f"plugin {args.name!r} written to {out}; install it with `pip install {out}`, then MLPotential({args.name!r})")
    return 0


def _cmd_train(args) -> int:
    from .train import Trainer, TrainConfig

    cfg = TrainConfig.from_yaml(args.config)
    rep = Trainer(cfg, progress=not args.quiet).run()
    if rep.get("rank", 0) != 0:  # one of torchrun's processes: process 0 speaks for the run
        return 0
    if rep["status"] == "interrupted":
        print(f"stopped after step {rep['step']} (stop_after_steps); rerun the same command to resume")
        return 0
    t = rep["test"] or rep["valid"]
    part = "test" if rep["test"] else "validation"
    print(f"finished: {rep['steps']} steps, {rep['epochs']} epochs. {part} set: energy MAE "
          f"{t['energy_mae_meV_per_atom']:.2f} meV/atom, force MAE {t['forces_mae_meV_per_A']:.1f} meV/Å, "
          f"force RMSE {t['forces_rmse_meV_per_A']:.1f} meV/Å"
          + (f", charge MAE {t['charges_mae_e']:.4f} e" if "charges_mae_e" in t else ""))
    print(f"outputs in {cfg.output}: checkpoint.pt, best.pt, metrics.csv, report.json; deploy with "
          f"`openmlip deploy {cfg.output} --out model.pt`")
    return 0


def _cmd_deploy(args) -> int:
    from .train import deploy_run

    meta = deploy_run(args.run, args.output)
    print(f"model file {args.output}: {meta['architecture']}, elements {', '.join(meta['elements'])}, cutoff {meta['cutoff']} Å")
    return 0


def _type_map(items: Optional[List[str]]) -> dict:
    out = {}
    for item in items or []:
        name, sep, sym = item.partition("=")
        if not sep or not name or not sym:
            raise ConfigError(f"--type-map {item!r}: write TYPE=ELEMENT, e.g. --type-map Cw=C")
        out[name] = sym
    return out


def _cmd_import(args) -> int:
    from .imports import import_model

    meta = import_model(args.source, args.output, framework=args.framework, length_unit=args.length_unit,
                        energy_unit=args.energy_unit, type_map=_type_map(args.type_map), head=args.head)
    imp = meta["imported"]
    version = imp.get("framework_version") or "version unknown"
    print(f"model file {args.output}: {meta['architecture']} ({imp['framework']} {version}), elements "
          f"{', '.join(meta['elements'])}, cutoff {meta['cutoff']:g} Å, {meta['dtype']}; no partial charges "
          "(mechanical embedding only)")
    return 0


def _cmd_data_generate(args) -> int:
    from .data.generate import generate
    from .data.templates import expand_templates

    templates = expand_templates(args.templates) if args.templates else None
    _positive_int(args.conformers, "--conformers", "conformers per template")
    _positive_int(args.stride, "--stride", "MD steps between kept conformers")
    man = generate(args.out, templates, args.conformers, args.seed, args.stride, progress=not args.quiet,
                   reuse=args.reuse or ())
    print(f"{man['conformers']} conformers ({man['computed_this_run']} computed in this run) in {args.out}; "
          f"manifest {Path(args.out).with_suffix('.json')}")
    return 0


def _cmd_data_harvest(args) -> int:
    from .data.harvest import check_options, harvest
    from .md.build import build_system
    from .md.spec import load_spec

    check_options(args.frames, args.centres, args.contacts, args.radius, option="--")  # before the System is built
    spec = load_spec(args.system)
    run = Path(args.run)
    trajectory = run / "md" / "trajectory.h5" if run.is_dir() else run
    if not trajectory.is_file():
        raise ConfigError(f"{args.run}: no trajectory (give a run folder of `openmlip run`, holding md/trajectory.h5, "
                          "or the trajectory file)")
    check_not_input(args.out, [run] if run.is_dir() else [], "--out", manifests=True)  # nor inside the run folder
    built = build_system(spec)
    about = {"spec": spec.name}
    try:  # the run's own record of its potential (openmlip run writes it beside its checkpoint)
        about["potential"] = json.loads((trajectory.parent / "checkpoint.json").read_text())["settings"]["potential"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    man = harvest(trajectory, built["mdtraj_topology"], built["ml_atoms"], built["ml_formal_charges"], args.out,
                  prefix=f"harvest-{spec.name}", frames=args.frames, centres=args.centres, radius=args.radius,
                  contacts=args.contacts,
                  progress=not args.quiet, about=about)
    print(f"{man['clusters']} clusters of {man['atoms_per_cluster'][0]}-{man['atoms_per_cluster'][1]} atoms "
          f"({len(man['skipped'])} skipped) in {args.out}; manifest {Path(args.out).with_suffix('.json')}")
    return 0


def _md_overrides(args) -> dict:
    return {"steps": args.steps, "equilibrate_steps": args.equilibrate_steps, "report_interval": args.report_interval}


def _print_run(info: dict) -> None:
    print(f"{info['system']}: {info['steps']} steps ({'resumed' if info['resumed'] else 'new run'}) on {info['platform']}, "
          f"{info['ms_per_step']:.2f} ms/step = {info['ns_per_day']:.3f} ns/day "
          f"(torch {info['threads']['torch']} / OpenMM {info['threads']['openmm']} threads); {info['ml_atoms']} of "
          f"{info['atoms']} atoms ML ({info['embedding'] if info['embedding'] != 'none' else 'whole system'})")


def _cmd_md(args) -> int:
    from .md.spec import load_spec
    from .md.system import run_md

    _positive_int(args.threads, "--threads", "CPU threads for torch and OpenMM")
    spec = load_spec(args.system)
    spec.md_settings(args.smoke, **_md_overrides(args))  # bad overrides fail before the system is built
    out = writable_dir(args.out or f"out/{spec.name}/md", "MD output")
    info = run_md(spec, out, args.smoke, args.potential, args.platform, args.threads,
                  not args.quiet, **_md_overrides(args))
    _print_run(info)
    print(f"trajectory {info['trajectory']}, state {info['state']}")
    return 0


def _print_checks(checks) -> bool:
    from .md.report import checks_text

    for line in checks_text(checks):
        print(line)
    return all(c["pass"] for c in checks)


def _cmd_run(args) -> int:
    from .md.report import temperature_text
    from .md.spec import TEMPERATURE, load_spec
    from .md.system import run_system

    _positive_int(args.threads, "--threads", "CPU threads for torch and OpenMM")
    spec = load_spec(args.system)
    spec.md_settings(args.smoke, **_md_overrides(args))  # bad overrides fail before the system is built
    out = writable_dir(args.out or f"out/{spec.name}", "run output")
    res = run_system(spec, out, args.smoke, args.potential, args.platform, args.threads, not args.quiet, **_md_overrides(args))
    _print_run(res["run"])
    temperature = res["analysis"]["results"].get(TEMPERATURE)
    if temperature is not None:
        print(f"  temperature (production) {temperature_text(temperature)}")
    ok = _print_checks(res["analysis"]["checks"])
    print(f"report {res['report']}")
    return 0 if ok or not args.strict else 1


def _cmd_data_relabel(args) -> int:
    from .data.dft import relabel

    _positive_int(args.conformers, "--conformers", "conformers to relabel")
    man = relabel(args.input, args.out, args.conformers, args.xc, args.basis, args.seed, args.molecules or None,
                  progress=not args.quiet, density_fit=not args.no_density_fit)
    print(f"{man['conformers']} conformers relabelled with {man['method']} ({man['computed_this_run']} computed in this run) "
          f"in {args.out}; keys dft_total_energy, dft_total_gradient, dft_charges (meta-Löwdin)")
    return 0


def _pair(text: str):
    parts = text.replace("–", "-").split("-")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--bonds takes element pairs like N-H, got {text!r}")
    return parts[0], parts[1]


def _cmd_evaluate(args) -> int:
    from .data.spice import DFT_LABELS, SPICE_LABELS, XTB_LABELS
    from .evaluate import write_evaluation
    from .openmm.registry import resolve_potential

    keys = {"xtb": XTB_LABELS, "dft": DFT_LABELS, "spice": SPICE_LABELS}[args.labels]
    tables = write_evaluation(resolve_potential(args.model), args.data, keys, args.out, args.molecules, args.scan or ())
    a = tables["all"]
    print(f"{a['conformers']} conformers: energy MAE {a['energy_mae_meV_per_atom']:.1f} meV/atom, force MAE "
          f"{a['forces_mae_meV_per_A']:.1f} meV/Å; tables in {Path(args.out) / 'errors.md'}")
    return 0


def _cmd_analyze(args) -> int:
    from .analysis import select
    from .analysis.report import MSD, RDF, Bonds, analyze, load_trajectory

    if args.r_max is not None and not args.r_max > 0:
        raise ConfigError(f"--r-max {args.r_max:g}: must be a positive RDF range in nm (e.g. --r-max 0.8)")
    if args.system:
        from .md.spec import load_spec
        from .md.system import analyze_system

        if args.bonds or args.rdf or args.msd or args.r_max is not None:
            raise ConfigError("--system takes the analyses from system.yaml: drop --bonds/--rdf/--msd/--r-max")
        spec = load_spec(args.system)
        check_replaceable(args.out, "analysis output", "results.json")
        res = analyze_system(spec, args.trajectory, args.out, args.smoke)
        ok = _print_checks(res["checks"])
        print(f"analysed {res['frames']} production frames; report {Path(args.out) / 'report.md'}, "
              f"checks {Path(args.out) / 'checks.json'}")
        return 0 if ok or not args.strict else 1
    if not (args.bonds or args.rdf or args.msd):
        raise ConfigError("nothing to do: give at least one of --bonds, --rdf, --msd (or --system SYSTEM)")
    rdfs = []
    for spec in args.rdf or []:
        if "/" not in spec:
            raise ConfigError(f"--rdf takes 'SELECTION_A/SELECTION_B', got {spec!r}")
        rdfs.append(tuple(x.strip() for x in spec.split("/", 1)))
    bonds = [_pair(b) for b in args.bonds or []]
    check_replaceable(args.out, "analysis output", "results.json")
    traj = load_trajectory(args.trajectory, args.top)
    for spec, (sa, sb) in zip(args.rdf or [], rdfs):  # name the option before any analysis runs
        select(traj.topology, sa, f"--rdf {spec!r} (before the /)")
        select(traj.topology, sb, f"--rdf {spec!r} (after the /)")
    for sel in args.msd or []:
        select(traj.topology, sel, "--msd")
    if rdfs and traj.unitcell_vectors is None:
        raise ConfigError(f"--rdf needs a periodic box and {args.trajectory} has no unit cell: drop --rdf")
    jobs = ([Bonds(pair) for pair in bonds] + [RDF(sa, sb, args.r_max) for sa, sb in rdfs]
            + [MSD(sel) for sel in args.msd or []])
    res = analyze(traj, args.out, jobs)
    print(f"analysed {res['frames']} frames; report {Path(args.out) / 'report.md'}, numbers {Path(args.out) / 'results.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .data.dft import DEFAULT_BASIS as DFT_BASIS, DEFAULT_XC as DFT_XC

    p = argparse.ArgumentParser(prog="openmlip", description="Charge-aware equivariant ML potentials in OpenMM.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("doctor", help="check versions, OpenMM platforms and the openmm-torch plugin")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(func=_cmd_doctor)
    m = sub.add_parser("demo", help="MD of NH4+(H2O)4 with the shipped potential in a TorchForce (CPU platform)")
    m.add_argument("--out", default="out/demo", help="output directory (default: out/demo)")
    m.add_argument("--steps", type=int, default=200, help="MD steps of 0.5 fs (default 200)")
    m.add_argument("--threads", type=int, default=1, help="torch and OpenMM CPU threads (default 1)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.add_argument("--model", default=DEFAULT_POTENTIAL,
                   help=f"installed potential name, model file, or 'random' (default: the shipped {DEFAULT_POTENTIAL})")
    m.set_defaults(func=_cmd_demo)
    da = sub.add_parser("data", help="reference data")
    dsub = da.add_subparsers(dest="data_command", required=True)
    dg = dsub.add_parser("generate", help="GFN2-xTB conformers of built-in templates (resumable; needs the `data` extra)")
    dg.add_argument("--out", required=True, help="output SPICE-layout HDF5 file")
    dg.add_argument("--templates", nargs="*", help="template names, or a release's list (v3, v4, v5: the templates of "
                    "that shipped dataset); default: all")
    dg.add_argument("--conformers", type=int, default=150, help="conformers per template (default 150)")
    dg.add_argument("--stride", type=int, default=20, help="MD steps between kept conformers (default 20)")
    dg.add_argument("--seed", type=int, default=0)
    dg.add_argument("--reuse", nargs="*", help="datasets written by `data generate` whose conformers of the same "
                    "templates (same seed and stride) are taken instead of recomputed (e.g. the shipped v3 file)")
    dg.add_argument("--quiet", action="store_true")
    dg.set_defaults(func=_cmd_data_generate)
    dh = dsub.add_parser("harvest", help="GFN2-xTB clusters cut from an MD run where it went wrong: the last frames' "
                         "most stretched X-H bonds (resumable; needs the `data` extra)")
    dh.add_argument("system", help="the run's system.yaml (its ML region and formal charges)")
    dh.add_argument("run", help="the `openmlip run` output folder (or its md/trajectory.h5)")
    dh.add_argument("--out", required=True, help="output SPICE-layout HDF5 file (list it in a training config's data)")
    dh.add_argument("--frames", type=int, default=20, help="last frames to use (default 20)")
    dh.add_argument("--centres", type=int, default=2, help="most stretched X-H bonds per frame (default 2)")
    dh.add_argument("--contacts", type=int, default=0, help="closest heavy-atom pairs between molecules per frame "
                    "(default 0; where molecules collapse onto each other)")
    dh.add_argument("--radius", type=float, default=4.0, help="Å of whole molecules around each centre (default 4)")
    dh.add_argument("--quiet", action="store_true")
    dh.set_defaults(func=_cmd_data_harvest)
    dr = dsub.add_parser("relabel", help="recompute a subset of conformers with DFT (PySCF; resumable)")
    dr.add_argument("input", help="SPICE-layout HDF5 with xTB labels (from data generate)")
    dr.add_argument("--out", required=True, help="output SPICE-layout HDF5 (keys dft_total_energy, dft_total_gradient, dft_charges)")
    dr.add_argument("--conformers", type=int, default=20, help="how many, spread evenly over molecules (default 20)")
    dr.add_argument("--xc", default=DFT_XC, help=f"exchange-correlation functional, PySCF/libxc name with an optional "
                    f"dispersion suffix (default {DFT_XC}, SPICE's)")
    dr.add_argument("--basis", default=DFT_BASIS, help=f"basis set (default {DFT_BASIS})")
    dr.add_argument("--no-density-fit", action="store_true", help="exact Coulomb and exchange integrals (slower; "
                    "the default fits them with PySCF's def2-universal-JKFIT basis)")
    dr.add_argument("--molecules", nargs="*", help="only these molecules (group names)")
    dr.add_argument("--seed", type=int, default=0)
    dr.add_argument("--quiet", action="store_true")
    dr.set_defaults(func=_cmd_data_relabel)
    t = sub.add_parser("train", help="train a potential from a YAML config (resumes if its output folder has a checkpoint)")
    t.add_argument("config", help="training YAML (see docs/training.md)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)
    dp = sub.add_parser("deploy", help="write the best weights of a training run as a model file")
    dp.add_argument("run", help="training output folder (holds best.pt)")
    dp.add_argument("-o", "--out", dest="output", default="model.pt",
                    help="model file to write (default model.pt)")
    dp.set_defaults(func=_cmd_deploy)
    im = sub.add_parser("import", help="turn a nequip/Allegro or MACE TorchScript model into an openmlip model file",
                        description="turn a trained model of another framework into an openmlip model file (docs/import.md)")
    im.add_argument("source", help="nequip-compile --mode torchscript output (*.nequip.pth) or a scripted MACE model (.pt)")
    im.add_argument("output", help="openmlip model file to write (.pt)")
    im.add_argument("--framework", choices=["nequip", "mace"], help="default: detected from the file")
    im.add_argument("--length-unit", default="Angstrom", choices=["Angstrom", "nm", "bohr"],
                    help="length unit the model was trained in (nequip; default Angstrom)")
    im.add_argument("--energy-unit", default="eV", choices=["eV", "kJ/mol", "kcal/mol", "hartree"],
                    help="energy unit the model was trained in (nequip; default eV)")
    im.add_argument("--type-map", nargs="*", metavar="TYPE=ELEMENT", help="element of each custom nequip atom type")
    im.add_argument("--head", help="MACE head (default: the model's last, as MACE's calculators)")
    im.set_defaults(func=_cmd_import)
    ev = sub.add_parser("evaluate", help="errors of a model file by molecule, element and charge; X-H dissociation curves")
    ev.add_argument("model", help="model file, or an installed potential's name (e.g. openmlip-xtb-v7)")
    ev.add_argument("data", nargs="+", help="SPICE-layout HDF5 files with reference labels")
    ev.add_argument("--labels", choices=["xtb", "dft", "spice"], default="xtb", help="which labels (default xtb)")
    ev.add_argument("--molecules", nargs="*", help="only these molecules (group names), e.g. the held-out ones")
    ev.add_argument("--scan", nargs="*", metavar="TEMPLATE:ELEMENT",
                    help="X-H dissociation curves against GFN2-xTB, e.g. ammonium:N methanol:O methanethiol:S")
    ev.add_argument("--out", default="out/evaluate", help="output folder (default out/evaluate)")
    ev.set_defaults(func=_cmd_evaluate)
    an = sub.add_parser("analyze", help="bond lengths, RDFs and MSD of a trajectory: CSV/JSON, PNG plots, Markdown report")
    an.add_argument("trajectory", help="trajectory (mdtraj HDF5 .h5 carries its topology; DCD/XTC need --top)")
    an.add_argument("--top", help="topology file for DCD/XTC trajectories")
    an.add_argument("--bonds", nargs="*", help="element pairs, e.g. N-H O-H")
    an.add_argument("--rdf", nargs="*", help="selection pairs 'SEL_A/SEL_B' in mdtraj syntax, e.g. 'name N/name O'")
    an.add_argument("--msd", nargs="*", help="selections for MSD and diffusion, e.g. 'name O'")
    an.add_argument("--r-max", type=float, default=None,
                    help="RDF range in nm, at most half the smallest box width (default 1.0, lowered to fit the box)")
    an.add_argument("--out", default="out/analysis", help="output folder (default out/analysis)")
    an.add_argument("--system", help="take the analyses and expected observables from this system.yaml; skips equilibration frames")
    an.add_argument("--smoke", action="store_true", help="with --system: the trajectory is from a --smoke run")
    an.add_argument("--strict", action="store_true", help="with --system: exit 1 when an expected observable is out of range")
    an.set_defaults(func=_cmd_analyze)
    for cmd, text in (("md", "MD of a system spec (systems/NAME/system.yaml): minimise, equilibrate, produce; resumable"),
                      ("run", "MD of a system spec, then its analyses, expected-observable checks and report")):
        r = sub.add_parser(cmd, help=text, description=text)
        r.add_argument("system", help="system.yaml, or a folder holding one (e.g. systems/ammonium-water)")
        r.add_argument("--out", help=f"output folder (default out/NAME{'/md' if cmd == 'md' else ''}); rerunning continues a killed run")
        r.add_argument("--potential", help="installed potential name or model file (overrides ml.potential)")
        r.add_argument("--platform", choices=["CUDA", "OpenCL", "CPU", "Reference"], help="force a platform (default: best available)")
        r.add_argument("--threads", type=int, default=1, help="torch and OpenMM CPU threads (default 1)")
        r.add_argument("--smoke", action="store_true", help="the spec's short smoke settings")
        r.add_argument("--steps", type=int, help="total MD steps (overrides the spec)")
        r.add_argument("--equilibrate-steps", type=int, help="equilibration steps (overrides the spec)")
        r.add_argument("--report-interval", type=int, help="steps between frames (overrides the spec)")
        r.add_argument("--quiet", action="store_true", help="no progress bar")
        if cmd == "run":
            r.add_argument("--strict", action="store_true", help="exit 1 when an expected observable is out of range")
        r.set_defaults(func=_cmd_md if cmd == "md" else _cmd_run)
    g = sub.add_parser("plugin", help="package a model file as a pip-installable openmm-ml potential plugin")
    g.add_argument("name", help="potential name for MLPotential(NAME): lower-case letters, digits, '-'")
    g.add_argument("model", help="model file written by openmlip (deploy)")
    g.add_argument("--out", help="output directory (default ./openmlip-plugin-NAME, the distribution's name)")
    g.add_argument("--description", default="", help="one paragraph for the model card")
    g.add_argument("--evaluation", help="an `openmlip evaluate` output folder of this model file: its error tables "
                                        "and dissociation curves go into the model card")
    g.add_argument("--notes", help="Markdown file: the card's 'Known failures and limits' section")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    g.set_defaults(func=_cmd_plugin)
    from .fe.cli import add_parser as add_fe_parser

    add_fe_parser(sub)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning) -> None:
    """openmlip's own warnings as one line each; everyone else's as Python prints them."""
    if str(filename).startswith(_PACKAGE_DIR):
        print(f"openmlip: warning: {message}", file=sys.stderr)
    else:
        _default(message, category, filename, lineno, file, line)


def main(argv: Optional[List[str]] = None) -> int:
    """Run a command.  openmlip's typed errors and missing files are one line on stderr and exit code 2, Ctrl-C
    one line and 130; anything else is a bug and keeps its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    log = logging.getLogger("openmlip")  # the library's progress notes (e.g. what a distributed run waits for)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("openmlip: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return int(args.func(args))
        except (OpenMLIPError, FileNotFoundError) as exc:
            if args.debug:
                raise
            print(f"openmlip: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:  # Ctrl-C: every command keeps only whole files, and resumes or redoes
            if args.debug:
                raise
            print(f"openmlip: {exc or 'interrupted; nothing half-written is kept: rerun the same command to continue'}",
                  file=sys.stderr)
            return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
