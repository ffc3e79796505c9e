"""Running the Snakemake workflow from tests (locally or through the SLURM profile)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def snakemake(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    """``snakemake -s workflows/Snakefile --nolock ARGS`` from the repository root; the rules call ``openmlip``, so
    this environment's scripts come first on PATH, as in an activated venv."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([SNAKEMAKE, "-s", "workflows/Snakefile", "--nolock", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def output(proc: subprocess.CompletedProcess) -> str:
    """Snakemake's whole output (it writes its job table to stdout or stderr, depending on version and logger)."""
    return proc.stdout + proc.stderr


def job_stats(text: str) -> dict:
    """Job counts per rule from Snakemake's 'Job stats' table (the DAG)."""
    block = text.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts
