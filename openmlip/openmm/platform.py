"""The OpenMM platform for a run: the fastest one on which openmm-torch's TorchForce works (MD and free energy)."""
from __future__ import annotations

import operator
from typing import Dict, List, Optional, Tuple

import openmm

from ..errors import ConfigError

PLATFORM_ORDER = ("CUDA", "OpenCL", "CPU", "Reference")


def openmm_seed(seed: int) -> int:
    """The OpenMM random-number seed (integrator, ``setVelocitiesToTemperature``) for openmlip's ``seed``.

    OpenMM reads 0 as "choose one at random", so ``seed: 0`` (every shipped spec) gave two runs that differed
    from the first step.  openmlip's seeds are all reproducible: ``seed mod (2^31 - 1) + 1``, one OpenMM seed
    per seed below 2^31 - 1."""
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise ConfigError(f"seed={seed!r} must be an integer")
    return operator.index(seed) % (2**31 - 1) + 1


def choose_platform(forced: Optional[str] = None, threads: int = 1) -> Tuple[openmm.Platform, Dict[str, str], List[str]]:
    """CUDA (mixed precision) → OpenCL → CPU → Reference, skipping platforms where a TorchForce does not run.

    Returns (platform, properties, reasons): one line per platform considered.
    """
    from ..doctor import torchforce_works

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads={threads!r}: the number of CPU threads must be a positive integer (e.g. 1)")
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    reasons: List[str] = []
    order = (forced,) if forced else PLATFORM_ORDER
    if forced and forced not in names:
        raise ConfigError(f"platform {forced!r} is not available; available: {', '.join(names)}")
    for name in order:
        if name not in names:
            reasons.append(f"{name}: not installed or no device")
            continue
        err = torchforce_works(name)
        if err is not None:
            reasons.append(f"{name}: present but openmm-torch does not run on it ({err})")
            if forced:
                raise ConfigError(f"platform {forced!r} cannot run openmlip's TorchForce: {err}; choose another platform "
                                  "or none (best available)")
            continue
        props = {"Precision": "mixed"} if name in ("CUDA", "OpenCL") else ({"Threads": str(threads)} if name == "CPU" else {})
        reasons.append(f"{name}: chosen" + (" (forced)" if forced else ""))
        return openmm.Platform.getPlatformByName(name), props, reasons
    raise ConfigError("no OpenMM platform can run openmlip: " + "; ".join(reasons) + "; `openmlip doctor` explains")
