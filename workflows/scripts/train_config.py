"""Write the training YAML for `openmlip train` (Snakemake script of rule train_config)."""
from pathlib import Path

import yaml

cfg = dict(snakemake.params.train)  # noqa: F821  (injected by Snakemake)
out = Path(snakemake.output[0])  # noqa: F821
cfg["data"] = [str(Path(snakemake.input.data).resolve())]  # noqa: F821
cfg["output"] = str(Path(snakemake.params.run).resolve())  # noqa: F821
cfg.setdefault("energy_key", "xtb_total_energy")
cfg.setdefault("gradient_key", "xtb_total_gradient")
cfg.setdefault("charges_key", "xtb_charges")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(yaml.safe_dump(cfg, sort_keys=False))
