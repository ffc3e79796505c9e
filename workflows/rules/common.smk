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
