rule generate_data:
    """GFN2-xTB conformers of the configured templates (resumable; shards in <output>.parts/)."""
    output:
        data=f"{OUT}/data/dataset.h5",
        manifest=f"{OUT}/data/dataset.json",
    params:
        templates=" ".join(config["data"]["templates"]),
        conformers=config["data"]["conformers"],
        stride=config["data"]["stride"],
        seed=config["data"]["seed"],
    log:
        f"{OUT}/logs/generate_data.log",
    conda:
        "../envs/openmlip.yaml"
    threads: 1
    resources:
        runtime=120,
    shell:
        "OMP_NUM_THREADS=1 openmlip data generate --out {output.data} --templates {params.templates} "
        "--conformers {params.conformers} --stride {params.stride} --seed {params.seed} --quiet > {log} 2>&1"
