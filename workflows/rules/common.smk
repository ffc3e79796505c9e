from pathlib import Path


def system_id(path):
    """systems/water-box -> water-box; systems/ammonium-water/system-full-ml.yaml -> ammonium-water-full-ml."""
    p = Path(path)
    if p.suffix != ".yaml":
        return p.name
    if p.stem == "system":
        return p.parent.name
    return f"{p.parent.name}-{p.stem.removeprefix('system-')}"


def spec_file(wildcards):
    path = SYSTEMS[wildcards.system]
    return path if path.endswith(".yaml") else f"{path}/system.yaml"


def trained_model(wildcards):
    """The freshly trained model, or nothing when the config names an installed potential."""
    return [] if config["md"].get("potential") else [f"{OUT}/model.pt"]


def potential_arg(wildcards, input):
    return config["md"].get("potential") or input.model[0]


def train_report(wildcards):
    return [] if config["md"].get("potential") else [f"{OUT}/train/run/report.json"]


# free-energy corrections (rules/fe.smk)
FE = config.get("fe") or {}
FE_SYSTEMS = {system_id(s): s for s in FE.get("systems", [])}


def fe_spec_file(wildcards):
    path = FE_SYSTEMS[wildcards.system]
    return path if path.endswith(".yaml") else f"{path}/system.yaml"


def fe_unit_files(wildcards):
    """Every unit file of one system (all legs): windows and switch batches."""
    from openmlip.fe.engine import DIRECTIONS
    from openmlip.fe.spec import load_fe_spec

    spec = load_fe_spec(fe_spec_file(wildcards))
    s = spec.fe_settings(bool(FE.get("smoke")))
    root = f"{OUT}/fe/{wildcards.system}"
    files = []
    for leg in spec.legs:
        files += [f"{root}/{leg}/windows/window-{k:03d}.npz" for k in range(len(s.lambdas))]
        files += [f"{root}/{leg}/switches/{d}-{b:03d}.npz" for d in DIRECTIONS for b in range(s.n_batches)]
    return files
