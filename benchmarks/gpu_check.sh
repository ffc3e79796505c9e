#!/usr/bin/env bash
# One-shot GPU check (issue: CUDA-ready inference): equality on the CUDA platform and the speed table.
#
#   bash benchmarks/gpu_check.sh --prepare    # here (network): wheels for a lent GPU machine into .whl/
#   bash benchmarks/gpu_check.sh              # on the CUDA machine (<= 10 min): doctor, checks, docs/gpu.md
#   bash benchmarks/gpu_check.sh --dry-run    # CPU fallback: same path on the CPU platform (vs Reference),
#                                             # small systems, report in out/gpu_check_dry_run.md
#
# On a machine without openmlip installed (the lent GPU: Python with torch, no OpenMM, no network) it installs
# the wheels that --prepare put in .whl/ (OpenMM 8.5.2 + CUDA platform, an openmm-torch build for the device's
# torch, openmm-ml, mdtraj, ase, openmlip and the shipped potentials) into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-check}"
if [ "$mode" = "--prepare" ]; then
  [ -f ../shared/gpu/prepare-wheels.sh ] || { echo "needs ../shared/gpu/prepare-wheels.sh" >&2; exit 2; }
  bash ../shared/gpu/prepare-wheels.sh "${2:-acellera}"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d .whl ase pyyaml tqdm
  python3 -m pip wheel -q --no-deps -w .whl . plugins/openmlip-xtb-v7
  du -sh .whl; exit 0
fi
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PY=.venv/bin/python
if ! "$PY" -c "import openmlip, openmm" 2>/dev/null; then
  [ -d .whl ] || { echo "openmlip is not installed and there is no .whl/ (run --prepare where there is network)" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD" LD_LIBRARY_PATH="$PWD/.whl/shim:${LD_LIBRARY_PATH:-}"
fi
export OMP_NUM_THREADS=1
timeout 120 "$PY" -m openmlip.cli doctor || echo "gpu_check: doctor reported problems (continuing)"
if [ "$mode" = "--dry-run" ]; then
  timeout 480 "$PY" benchmarks/gpu_check.py --platform CPU --quick --out "${OUT:-out/gpu_check_dry_run.md}" \
    --json "${OUT:-out/gpu_check_dry_run.md}.json"
else
  timeout 480 "$PY" benchmarks/gpu_check.py --platform CUDA --out docs/gpu.md --json benchmarks/results/gpu_check.json
fi
