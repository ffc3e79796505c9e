#!/usr/bin/env bash
# Snakemake runs this after creating the conda environment of openmlip.yaml: openmm-ml 1.8 declares
# openmm>=8.6.1 but runs on the pinned 8.5.2, whose ABI matches openmm-torch 1.5 (docs/design.md).
set -euo pipefail
python -m pip install --quiet --no-deps 'openmmml==1.8'
