"""Free-energy corrections ΔG(MM → ML/MM): one job per λ window and per batch of switches, then a gather.

Config (optional section; nothing runs without it):

    fe:
      systems: [systems/t4l99a-pxylene]   # specs with a free_energy section
      smoke: false                        # the section's smoke settings
      potential: null                     # installed potential or model file (default: the spec's ml.potential)
      platform: null                      # CUDA | OpenCL | CPU | Reference (default: best available)
      threads: 1
      runtime_minutes: 120
      gpus: 0

Targets: ``{OUT}/fe/{system}/report.md`` (all legs, and ΔΔG when the spec names a difference).
Each unit job writes one file and resumes when rerun after a kill; on a cluster (``--executor slurm``)
every window and switch batch is its own job.
"""
from pathlib import Path

FE_SMOKE = "--smoke" if FE.get("smoke") else ""
FE_OPTIONS = " ".join(
    x
    for x in (
        f"--potential {FE['potential']}" if FE.get("potential") else "",
        f"--platform {FE['platform']}" if FE.get("platform") else "",
    )
    if x
)


rule fe_window:
    """One λ window of one leg (resumable)."""
    input:
        spec=fe_spec_file,
    output:
        f"{OUT}/fe/{{system}}/{{leg}}/windows/window-{{k,[0-9]{{3}}}}.npz",
    params:
        out=lambda w: f"{OUT}/fe/{w.system}",
        smoke=FE_SMOKE,
        options=FE_OPTIONS,
    log:
        f"{OUT}/logs/fe/{{system}}/{{leg}}/window-{{k}}.log",
    conda:
        "../envs/openmlip.yaml"
    threads: FE.get("threads", 1)
    resources:
        runtime=FE.get("runtime_minutes", 120),
        gpu=FE.get("gpus", 0),
    shell:
        "openmlip fe {input.spec} --out {params.out} --leg {wildcards.leg} --window {wildcards.k} "
        "{params.smoke} {params.options} --threads {threads} --quiet > {log} 2>&1"


rule fe_switch:
    """One batch of non-equilibrium switches of one leg (resumable)."""
    input:
        spec=fe_spec_file,
    output:
        f"{OUT}/fe/{{system}}/{{leg}}/switches/{{direction,forward|reverse}}-{{batch,[0-9]{{3}}}}.npz",
    params:
        out=lambda w: f"{OUT}/fe/{w.system}",
        smoke=FE_SMOKE,
        options=FE_OPTIONS,
    log:
        f"{OUT}/logs/fe/{{system}}/{{leg}}/{{direction}}-{{batch}}.log",
    conda:
        "../envs/openmlip.yaml"
    threads: FE.get("threads", 1)
    resources:
        runtime=FE.get("runtime_minutes", 120),
        gpu=FE.get("gpus", 0),
    shell:
        "openmlip fe {input.spec} --out {params.out} --leg {wildcards.leg} --switch {wildcards.direction}:{wildcards.batch} "
        "{params.smoke} {params.options} --threads {threads} --quiet > {log} 2>&1"


rule fe_gather:
    """MBAR/BAR/Jarzynski per leg, ΔΔG between legs, plots and report.md."""
    input:
        spec=fe_spec_file,
        units=fe_unit_files,
    output:
        results=f"{OUT}/fe/{{system}}/results.json",
        report=f"{OUT}/fe/{{system}}/report.md",
    params:
        out=lambda w: f"{OUT}/fe/{w.system}",
        smoke=FE_SMOKE,
    log:
        f"{OUT}/logs/fe/{{system}}/gather.log",
    conda:
        "../envs/openmlip.yaml"
    shell:
        "openmlip fe {input.spec} --out {params.out} --gather {params.smoke} > {log} 2>&1"


rule fe_all:
    """All free-energy reports of config['fe']['systems']."""
    input:
        [f"{OUT}/fe/{s}/report.md" for s in FE_SYSTEMS],
