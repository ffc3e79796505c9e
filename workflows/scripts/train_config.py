"""Write the training YAML for `openmlip train` (Snakemake script of rule train_config)."""
from pathlib import Path

import yaml

from openmlip.data import XTB_LABELS

cfg = dict(snakemake.params.train)  # noqa: F821  (injected by Snakemake)
out = Path(snakemake.output[0])  # noqa: F821
cfg["data"] = [str(Path(snakemake.input.data).resolve())]  # noqa: F821
cfg["output"] = str(Path(snakemake.params.run).resolve())  # noqa: F821
for key, value in XTB_LABELS.kwargs().items():  # the labels `openmlip data generate` writes
    cfg.setdefault(key, value)
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(yaml.safe_dump(cfg, sort_keys=False))
