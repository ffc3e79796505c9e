rule train_config:
    """The training YAML: the workflow's train section plus the generated data and output folder."""
    input:
        data=rules.generate_data.output.data,
    output:
        f"{OUT}/train/config.yaml",
    params:
        train=config["train"],
        run=f"{OUT}/train/run",
    log:
        f"{OUT}/logs/train_config.log",
    conda:
        "../envs/openmlip.yaml"
    script:
        "../scripts/train_config.py"


rule train:
    """Train (resumes from the run folder's checkpoint if a previous attempt was killed)."""
    input:
        config=rules.train_config.output[0],
        data=rules.generate_data.output.data,
    output:
        best=f"{OUT}/train/run/best.pt",
        report=f"{OUT}/train/run/report.json",
    log:
        f"{OUT}/logs/train.log",
    conda:
        "../envs/openmlip.yaml"
    threads: 2
    resources:
        runtime=120,
    shell:
        "openmlip train {input.config} --quiet > {log} 2>&1"


rule deploy:
    """Best weights -> a TorchScript model file with metadata (the ARCHITECTURE.md contract)."""
    input:
        best=rules.train.output.best,
        report=rules.train.output.report,
    output:
        f"{OUT}/model.pt",
    log:
        f"{OUT}/logs/deploy.log",
    conda:
        "../envs/openmlip.yaml"
    shell:
        "openmlip deploy $(dirname {input.best}) --out {output} > {log} 2>&1"
