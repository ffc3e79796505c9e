#!/usr/bin/env bash
# Create the peer environments for benchmarks/speed.py and benchmarks/accuracy.py, each in its own venv
# (mace-torch pins e3nn 0.4.4, so it cannot share openmlip's venv). All pin torch 2.9.1 so that
# openmm-torch 1.5 (compiled against torch 2.9) loads in every one of them.
#   bash benchmarks/peers/setup.sh            # all peers (MACE, TorchMD-Net, NequIP + Allegro)
#   bash benchmarks/peers/setup.sh mace       # one of: mace torchmdnet nequip
# Venvs go to benchmarks/peers/.venv-<peer> (ignored by git). Each records `pip freeze` in freeze.txt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-python3}"
common=(torch==2.9.1 openmm==8.6.1 openmmtorch==1.5 openmmml==1.8 numpy psutil)
declare -A extra=(
  [mace]="mace-torch e3nn==0.4.4"
  [torchmdnet]="torchmd-net==3.1.0"
  [nequip]="nequip==0.19.1 nequip-allegro==0.8.3"
)
peers=("$@"); [ ${#peers[@]} -eq 0 ] && peers=(mace torchmdnet nequip)
for peer in "${peers[@]}"; do
  venv="$here/.venv-$peer"
  if [ -f "$venv/.ok" ]; then echo "$peer: $venv exists"; continue; fi
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  if "$venv/bin/pip" install -q "${common[@]}" ${extra[$peer]}; then
    "$venv/bin/pip" freeze > "$venv/freeze.txt"
    touch "$venv/.ok"
    echo "$peer: ready ($venv)"
  else
    echo "$peer: FAILED to install ${extra[$peer]} beside torch 2.9.1" >&2
  fi
done
