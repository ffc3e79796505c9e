"""benchmarks/gpu_check.sh's CPU fallback: the whole path up to the point where it needs CUDA.

On a CUDA machine the same script compares CUDA (mixed precision) with CPU and CUDA graphs on with off; here
the dry run compares the CPU platform with Reference on the two small systems and times a few steps.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu.md"
    env = dict(os.environ, OUT=str(out))
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True,
                         env=env, timeout=900, cwd=ROOT)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-2000:])
    assert "all equality checks passed" in res.stdout
    records = json.loads(Path(str(out) + ".json").read_text())
    assert [r["system"] for r in records] == ["ala2-vacuum", "ammonium-water"]
    for r in records:
        assert r["vs_reference"]["ok"] and r["vs_reference"]["dE_rel"] < 1e-5
        assert r["graphs_vs_off"]["ok"]
        for key, s in r["speed"].items():
            assert s["finite"] and s["ms_per_step"] > 0 and s["ns_per_day"] > 0, key
            dt = 0.5 if "0.5 fs" in key else 1.0
            assert abs(s["ns_per_day"] - 86400 / (s["ms_per_step"] / 1000) * dt * 1e-6) < 1e-9 * s["ns_per_day"]
    text = out.read_text()
    assert "| ala2-vacuum | 22 | ok" in text and "| ammonium-water | 1020 | ok" in text
    assert "graphs on, 1 fs" in text
