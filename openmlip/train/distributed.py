"""Where a training process runs: its device and, under ``torchrun``, its place among the others.

``openmlip train`` started by ``torchrun --nproc_per_node=N`` (one node) or by ``torchrun --nnodes=M ...``
on every node (several) reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment, joins the
process group (NCCL on GPUs, gloo on CPUs) and trains data-parallel with
:class:`torch.nn.parallel.DistributedDataParallel`.  Started without torchrun it is one process of one.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch

from ..errors import ConfigError

logger = logging.getLogger(__name__)


def resolve_device(setting: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """``auto``: the process's GPU if torch sees one, else the CPU; ``cpu``; ``cuda`` (under torchrun: GPU
    ``LOCAL_RANK``) or ``cuda:N``.  A CUDA setting on a machine without one is a ConfigError."""
    if setting == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if setting == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device={setting!r} but torch sees no CUDA device (torch.cuda.is_available() is False); "
                          "set device: auto (GPU when present, else CPU) or device: cpu")
    if setting == "cuda":
        return torch.device("cuda", local_rank)
    if world_size > 1:
        raise ConfigError(f"device={setting!r} names one GPU, but torchrun started {world_size} processes; write "
                          "device: cuda (process k uses GPU LOCAL_RANK) and choose GPUs with CUDA_VISIBLE_DEVICES")
    index = int(setting.split(":", 1)[1])
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device={setting!r} but torch sees {torch.cuda.device_count()} CUDA device(s); "
                          "use device: cuda:0 .. or device: auto")
    return torch.device(setting)


@dataclass
class Process:
    """This process's rank, the number of processes and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over processes, in place (no-op for one process)."""
        if self.distributed:
            import torch.distributed as dist

            if self.device.type == "cuda" and tensor.device.type != "cuda":
                tmp = tensor.to(self.device)
                dist.all_reduce(tmp)
                tensor.copy_(tmp.cpu())
            else:
                dist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every process."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


# torch.distributed's default timeout (s) for the rendezvous and every collective
DEFAULT_TIMEOUT_S = 1800.0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value.strip())
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer; torchrun sets RANK, WORLD_SIZE and LOCAL_RANK: start "
                          f"training with `torchrun --nproc-per-node N -m openmlip.cli train ...`, or unset {name}") from None


def torchrun_environment() -> Tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's variables, or :class:`ConfigError` naming the one that cannot be
    (a rank outside the world would wait for a process that never comes)."""
    world, rank, local = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1:
        raise ConfigError(f"WORLD_SIZE={world} must be >= 1 (the number of training processes)")
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is not in 0..{world - 1} (WORLD_SIZE={world}): no such process; let torchrun set "
                          "the ranks, or unset RANK and WORLD_SIZE for one process")
    if not 0 <= local < world:
        raise ConfigError(f"LOCAL_RANK={local} is not in 0..{world - 1} (WORLD_SIZE={world}); let torchrun set it")
    if world > 1:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if missing:
            raise ConfigError(f"WORLD_SIZE={world} but {' and '.join(missing)} not set: the processes cannot meet; start "
                              "them with torchrun, which sets both")
    return world, rank, local


@contextlib.contextmanager
def process(device: str = "auto", timeout_s: Optional[float] = None) -> Iterator[Process]:
    """This process's :class:`Process`; under torchrun, joins the process group (and leaves it on exit).  The
    rendezvous and every collective wait at most ``timeout_s`` (default torch's 1800 s); a rendezvous that does not
    happen in that time is a :class:`ConfigError` saying what was waited for."""
    world, rank, local = torchrun_environment()
    dev = resolve_device(device, local, world)
    if world <= 1:
        yield Process(device=dev)
        return
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        wait = DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        logger.info("rank %d of %d: waiting up to %g s for all %d processes to meet at %s", rank, world, wait, world, where)
        try:
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(seconds=wait))
        except Exception as exc:  # noqa: BLE001  (torch raises DistStoreError, RuntimeError, ValueError variants)
            raise ConfigError(f"rank {rank} of {world}: the {world} training processes did not meet at {where} within "
                              f"{wait:g} s ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); start all "
                              f"of them (torchrun --nproc-per-node {world}), or unset WORLD_SIZE for one") from None
    try:
        yield Process(rank=rank, world_size=world, local_rank=local, device=dev)
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()
