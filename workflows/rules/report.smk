rule report:
    """One page: the training report, then every system's run, checks and analyses."""
    input:
        checks=expand(f"{OUT}/analysis/{{system}}/checks.json", system=sorted(SYSTEMS)),
        md=expand(f"{OUT}/md/{{system}}", system=sorted(SYSTEMS)),
        train=train_report,
    output:
        f"{OUT}/report.md",
    log:
        f"{OUT}/logs/report.log",
    conda:
        "../envs/openmlip.yaml"
    script:
        "../scripts/report.py"
