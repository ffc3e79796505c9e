rule md:
    """MD of one system spec. The folder is the output, so a changed input starts the run afresh."""
    input:
        spec=spec_file,
        model=trained_model,
    output:
        directory(f"{OUT}/md/{{system}}"),
    params:
        potential=potential_arg,
        smoke=SMOKE,
        platform=f"--platform {config['md']['platform']}" if config["md"].get("platform") else "",
    log:
        f"{OUT}/logs/md/{{system}}.log",
    conda:
        "../envs/openmlip.yaml"
    threads: config["md"]["threads"]
    resources:
        runtime=config["md"]["runtime_minutes"],
        gpu=config["md"]["gpus"],
    shell:
        "openmlip md {input.spec} --out {output} --potential {params.potential} {params.smoke} {params.platform} "
        "--threads {threads} --quiet > {log} 2>&1"


rule analyze:
    """The spec's analyses on the production frames, with its expected observables checked."""
    input:
        spec=rules.md.input.spec,
        md=rules.md.output[0],
    output:
        results=f"{OUT}/analysis/{{system}}/results.json",
        checks=f"{OUT}/analysis/{{system}}/checks.json",
        report=f"{OUT}/analysis/{{system}}/report.md",
    params:
        smoke=SMOKE,
    log:
        f"{OUT}/logs/analyze/{{system}}.log",
    conda:
        "../envs/openmlip.yaml"
    shell:
        "openmlip analyze {input.md}/trajectory.h5 --system {input.spec} --out $(dirname {output.results}) "
        "{params.smoke} > {log} 2>&1"
