"""SLURM: the smoke workflow through `workflows/profiles/slurm` (snakemake-executor-plugin-slurm) on a real
one-node SLURM cluster on this machine, started by `workflows/slurm/start-local-cluster.sh` (needs root:
it apt-installs slurm-wlm and munge on first use and leaves the cluster running; stop it with
`workflows/slurm/stop-local-cluster.sh`). Every job must be an `sbatch` submission, counted three ways
(SLURM's own job list, the plugin's log files, Snakemake's submission lines), and a failing job must fail
the run by name with its SLURM log. Deselect with `-m "not slurm"`."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers.workflow import job_stats

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
START = ROOT / "workflows" / "slurm" / "start-local-cluster.sh"
PROFILE = "workflows/profiles/slurm"

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="session")
def cluster():
    """The local cluster, started (or found running) by the shipped script; a failure to start is a test
    error with the script's reason, never a skip."""
    if os.geteuid() != 0:
        pytest.fail(f"{START.relative_to(ROOT)} needs root (apt-get, /etc/slurm, daemons); "
                    "run as root or deselect with -m 'not slurm'", pytrace=False)
    try:
        proc = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{START.name} timed out after 900 s:\n{e.stdout}\n{e.stderr}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"the local SLURM cluster did not start (exit {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", pytrace=False)
    return proc.stdout


def _snake(tmp: Path, *args, timeout=1200):
    """Snakemake with the SLURM profile; the plugin's SLURM logs (kept for successful jobs too) go to tmp."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [SNAKEMAKE, "-s", "workflows/Snakefile", "--nolock", "--profile", PROFILE,
           "--slurm-logdir", str(tmp / "slurm_logs"), "--slurm-keep-successful-logs", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    return proc, proc.stdout + proc.stderr


def _slurm_jobs(output: str) -> list[tuple[str, str, str]]:
    """(SLURM job id, rule, state) of every job SLURM holds for this run: the plugin names each job after
    the run ID and puts rule_<rule>[_wildcards_<w>] in its comment; MinJobAge=3600 keeps finished jobs."""
    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    out = subprocess.run(["squeue", "--states=all", "--noheader", "--name", run_id, "--format=%i|%k|%T"],
                         capture_output=True, text=True, check=True).stdout
    jobs = []
    for line in out.split():
        jobid, comment, state = line.split("|")
        jobs.append((jobid, re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", comment).group(1), state))
    return jobs


@pytest.fixture(scope="module")
def slurm_smoke(cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slurm")
    out = tmp / "results"
    proc, output = _snake(tmp, "--configfile", "workflows/config/smoke.yaml", "--config", f"output={out}")
    assert proc.returncode == 0, output[-6000:]
    return tmp, out, output


def test_smoke_workflow_runs_every_job_through_sbatch(slurm_smoke):
    tmp, out, output = slurm_smoke
    report = (out / "report.md").read_text()
    assert "Training" in report
    for name in ("ammonium-cluster", "ammonium-water"):
        assert f"[{name}]" in report
        run = json.loads((out / "md" / name / "run.json").read_text())
        assert run["smoke"] is True and Path(run["potential"]).resolve() == (out / "model.pt").resolve()
        assert json.loads((out / "analysis" / name / "checks.json").read_text())
    # every job of the DAG but the target rule `all` (no command, done by Snakemake itself) went to SLURM
    dag = job_stats(output)
    expected = {rule: n for rule, n in dag.items() if rule not in ("all", "total")}
    assert sum(expected.values()) == dag["total"] - 1 == 9
    jobs = _slurm_jobs(output)
    assert Counter(rule for _, rule, _ in jobs) == expected, jobs
    assert {state for _, _, state in jobs} == {"COMPLETED"}, jobs
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    assert sorted(submitted) == sorted(jobid for jobid, _, _ in jobs)
    logs = sorted(p.stem for p in (tmp / "slurm_logs").rglob("*.log"))
    assert logs == sorted(submitted)  # the plugin's per-job SLURM output files, one per sbatch


def test_a_failing_job_fails_the_run_by_name(cluster, tmp_path):
    """An installed potential that does not exist: the MD jobs run on SLURM and exit non-zero; Snakemake
    exits non-zero, names rule md, its SLURM job and SLURM log, and submits nothing downstream."""
    (tmp_path / "fail.yaml").write_text("md:\n  potential: /nonexistent/model.pt\n")
    out = tmp_path / "results"
    proc, output = _snake(tmp_path, "--configfile", "workflows/config/smoke.yaml", str(tmp_path / "fail.yaml"),
                          "--config", f"output={out}")
    assert proc.returncode != 0, output[-3000:]
    assert "Error in rule md:" in output
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: 'FAILED'", output), output[-3000:]
    assert "At least one job did not complete successfully" in output
    slurm_logs = re.findall(r"log: \S+\.log, (\S+/slurm_logs/rule_md/[\w-]+/\d+\.log) \(check log", output)
    assert slurm_logs and all(Path(p).is_file() for p in slurm_logs), output[-3000:]
    assert "Error in rule md" in Path(slurm_logs[0]).read_text()
    rule_logs = list((out / "logs" / "md").glob("*.log"))
    assert rule_logs and any("neither an installed openmlip potential" in p.read_text() for p in rule_logs)
    jobs = _slurm_jobs(output)
    assert jobs and {rule for _, rule, _ in jobs} == {"md"} and "FAILED" in {state for _, _, state in jobs}, jobs
