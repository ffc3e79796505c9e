"""Digests of what defines a System's Hamiltonian, the same in every process (for the run store's settings)."""
from __future__ import annotations

import hashlib
import io
import re
import zipfile
from typing import Dict

import numpy as np

import openmm
import openmm.unit as u


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _torch_archive_digest(hex_contents: str) -> str:
    """Digest of a serialised TorchScript archive's weights, buffers and attributes.

    The archive's folder name is random, its code files carry source positions and its class names the
    number of times a class was scripted in the process, so none of these is hashed: the same model,
    atoms, charge and precision give the same digest in every process and every build.
    """
    h = hashlib.sha256()
    with zipfile.ZipFile(io.BytesIO(bytes.fromhex(hex_contents))) as z:
        for name in sorted(z.namelist(), key=lambda n: n.split("/", 1)[-1]):
            tail = name.split("/", 1)[-1]
            if tail.startswith(("code/", ".data/")):
                continue
            h.update(tail.encode())
            # TorchScript numbers a class scripted again in one process (``___torch_mangle_7``): not the model
            h.update(re.sub(rb"\.___torch_mangle_\d+", b"", z.read(name)))
    return h.hexdigest()[:16]


def system_fingerprint(system: openmm.System) -> Dict[str, str]:
    """Short digests of what defines a System's Hamiltonian: the masses, the constraints and every force.

    Deterministic across processes (a TorchForce's model is hashed by its weights, buffers and
    attributes, which include the ML atoms, the total charge and the precision).  A force that cannot
    be serialised (e.g. a PythonForce) is listed by name only.
    """
    n = system.getNumParticles()
    masses = np.array([system.getParticleMass(i).value_in_unit(u.dalton) for i in range(n)])
    cons = [system.getConstraintParameters(i) for i in range(system.getNumConstraints())]
    cons = np.array([(i, j, d.value_in_unit(u.nanometer)) for i, j, d in cons], dtype=float)
    out = {"particles": f"{n} atoms, masses {_digest(masses.tobytes())}",
           "constraints": f"{len(cons)}, {_digest(cons.tobytes())}"}
    for k, force in enumerate(system.getForces()):
        try:
            xml = openmm.XmlSerializer.serialize(force)
        except Exception:  # noqa: BLE001  -- not serialisable: compared by name only
            out[f"force {k}"] = f"{type(force).__name__} (not compared)"
            continue
        kind = re.search(r'type="(\w+)"', xml)
        xml = re.sub(r'encodedFileContents="([0-9a-fA-F]*)"', lambda m: f'model="{_torch_archive_digest(m.group(1))}"', xml)
        xml = re.sub(r' file="[^"]*"', "", xml)  # where the model was read from is not physics
        out[f"force {k}"] = f"{kind.group(1) if kind else type(force).__name__} {_digest(xml.encode())}"
    return out
