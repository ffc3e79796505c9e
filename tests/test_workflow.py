"""Snakemake: the smoke workflow end to end, reruns limited to what depends on a touched file, a dry run
of the full workflow, and lint."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers.workflow import job_stats, output, snakemake


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("wf") / "results"
    t0 = time.perf_counter()
    proc = snakemake("--cores", "2", "--configfile", "workflows/config/smoke.yaml", "--config", f"output={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, time.perf_counter() - t0


def test_smoke_workflow_end_to_end(smoke):
    out, seconds = smoke
    assert seconds < 300
    report = (out / "report.md").read_text()
    for name in ("ammonium-cluster", "ammonium-water"):
        assert f"[{name}]" in report
        run = json.loads((out / "md" / name / "run.json").read_text())
        assert run["smoke"] is True and Path(run["potential"]).resolve() == (out / "model.pt").resolve()
        checks = json.loads((out / "analysis" / name / "checks.json").read_text())
        assert checks and all(set(c) >= {"observable", "value", "range", "pass"} for c in checks)
    from openmlip.deploy import load_model

    _, meta = load_model(out / "model.pt")
    assert meta["elements"] == ["H", "N", "O"]
    assert "Training" in report


def test_changing_an_upstream_file_reruns_only_its_dependents(smoke):
    """Snakemake reruns what depends on a changed file (dry run). Its metadata holds input checksums, so a
    bare `touch` of a small file whose bytes did not change reruns nothing; changed bytes do."""
    out, _ = smoke
    args = ("-n", "--cores", "2", "--configfile", "workflows/config/smoke.yaml", "--config", f"output={out}")
    assert "Nothing to be done" in output(snakemake(*args))
    saved = {p: (p.read_bytes(), p.stat()) for p in (out / "model.pt", out / "data" / "dataset.h5")}
    try:
        later = time.time() + 10
        model = out / "model.pt"
        model.write_bytes(saved[model][0] + b"\0")  # a changed model file (a dry run never loads it)
        os.utime(model, (later, later))
        assert job_stats(output(snakemake(*args))) == {"md": 2, "analyze": 2, "report": 1, "all": 1, "total": 6}
        data = out / "data" / "dataset.h5"
        data.write_bytes(saved[data][0] + b"\0")
        os.utime(data, (later + 10, later + 10))
        assert job_stats(output(snakemake(*args))) == {"train_config": 1, "train": 1, "deploy": 1, "md": 2, "analyze": 2,
                                              "report": 1, "all": 1, "total": 9}
    finally:
        for p, (content, st) in saved.items():
            p.write_bytes(content)
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "Nothing to be done" in output(snakemake(*args))


def test_full_workflow_dry_run():
    proc = snakemake("-n", "--cores", "2", "--configfile", "workflows/config/default.yaml", "--config", "output=/tmp/openmlip-dry")
    assert proc.returncode == 0, proc.stderr
    jobs = job_stats(output(proc))
    assert jobs == {"generate_data": 1, "train_config": 1, "train": 1, "deploy": 1, "md": 6, "analyze": 6, "report": 1,
                    "all": 1, "total": 18}


def test_lint_is_clean():
    proc = snakemake("--lint", "--configfile", "workflows/config/smoke.yaml")
    assert proc.returncode == 0
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_missing_config_is_a_clear_error():
    proc = snakemake("-n")
    assert proc.returncode != 0 and "no configuration: run with --configfile" in output(proc)


def test_config_is_schema_validated():
    proc = snakemake("-n", "--configfile", "workflows/config/smoke.yaml", "--config", "output=/tmp/x", "bogus=1")
    assert proc.returncode != 0
    assert "bogus" in proc.stdout + proc.stderr
