"""The OpenMM platform for a run: the fastest one on which openmm-torch's TorchForce works (MD and free energy)."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import openmm

from ..errors import ConfigError

PLATFORM_ORDER = ("CUDA", "OpenCL", "CPU", "Reference")


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
