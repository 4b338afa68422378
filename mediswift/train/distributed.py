"""Process-group setup and model wrapping for data-parallel training under torchrun.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them this is a single process and every
helper here is a no-op. The backend is NCCL when training on CUDA and gloo on CPU. Only rank 0
writes checkpoints and logs (`Dist.is_main`).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.elastic.rendezvous.static_tcp_rendezvous import StaticTCPRendezvous


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(pref: str = "auto") -> torch.device:
    """ "auto" picks CUDA when available, else CPU; anything else is taken as given."""
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(pref)


def missing_device(pref: str) -> str | None:
    """Why the device setting `pref` cannot be used on this machine (None: it can). Checked
    when a run starts, so a recipe for another machine fails at once, naming the setting."""
    if pref in ("auto", "cpu"):
        return None
    if pref == "mps":
        return None if torch.backends.mps.is_available() else "MPS is not available here"
    if not torch.cuda.is_available():
        return "CUDA is not available on this machine"
    index = int(pref.split(":", 1)[1]) if ":" in pref else 0
    count = torch.cuda.device_count()
    return None if index < count else f"this machine has {count} CUDA device(s)"


def init_distributed(device_pref: str = "auto") -> Dist:
    """Join the torchrun process group if there is one; return this process's place in it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_pref)
    if world <= 1:
        return Dist(device=device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=rank, local_rank=local, world_size=world, device=device)


def wrap_model(model: nn.Module, d: Dist, fsdp: bool = False) -> nn.Module:
    """DDP (or FSDP2 `fully_shard`, one unit per block, when `fsdp`) around `model` if distributed."""
    if not d.enabled:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in model.h:  # type: ignore[attr-defined]
            fully_shard(block)
        fully_shard(model)
        return model
    ids = [d.local_rank] if d.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def mean_across(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """The mean of a tensor over all ranks (itself when single-process)."""
    if not d.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / d.world_size


def min_across(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """The elementwise minimum of a tensor over all ranks (itself when single-process)."""
    if not d.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value


def gather_objects(obj: object, d: Dist) -> list[object]:
    """Every rank's `obj` (JSON-able loader positions etc.), in rank order."""
    if not d.enabled:
        return [obj]
    out: list[object] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


# ---- a rendezvous that listens on loopback only (one node under torchrun) ------------------

LOOPBACK = "127.0.0.1"


def loopback_listener(port: int = 0) -> socket.socket:
    """A TCP socket bound to 127.0.0.1 (`port` 0: a free one), listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    sock.listen(512)
    return sock


class LoopbackRendezvous(StaticTCPRendezvous):
    """torchrun's static rendezvous for one node, its store listening on 127.0.0.1 only.

    Why: a `TCPStore` server binds every interface (`::`) whatever host it is given, so
    `--standalone` (c10d on localhost) or a loopback `--rdzv-endpoint` still leave an
    unauthenticated store reachable from the network. Handed a socket already bound to
    127.0.0.1 (`master_listen_fd`), it listens there and nowhere else. The workers reuse this
    store as clients (`use_agent_store`), so it is the run's only store."""

    BACKEND = "mediswift-loopback"  # the name torchrun's registry knows it by

    def get_backend(self) -> str:
        return self.BACKEND

    def next_rendezvous(self) -> Any:
        from torch.distributed.elastic.rendezvous import RendezvousInfo, RendezvousStoreInfo

        if self._store is None:
            self._listener = loopback_listener(self.master_port)
            self.master_port = self._listener.getsockname()[1]
            self._store = dist.TCPStore(
                LOOPBACK,
                self.master_port,
                self.world_size,
                True,
                self.timeout,
                multi_tenant=True,
                master_listen_fd=self._listener.fileno(),
                use_libuv=True,
            )
        store = dist.PrefixStore(self.run_id, self._store)
        return RendezvousInfo(
            store, self.rank, self.world_size, RendezvousStoreInfo(LOOPBACK, self.master_port)
        )


def loopback_handler(params: Any) -> LoopbackRendezvous:
    """The rendezvous handler torchrun's registry builds for `LOOPBACK_BACKEND`: one node."""
    if params.max_nodes != 1:
        raise ValueError("the loopback rendezvous serves one node; several need c10d")
    _, _, port = params.endpoint.rpartition(":")
    timeout = int(params.config.get("timeout", 600))
    return LoopbackRendezvous(LOOPBACK, int(port or 0), 0, 1, params.run_id, timeout)


def loopback_interface() -> str | None:
    """The name of this machine's loopback interface (`lo` on Linux), if it has one."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    return next((n for n in names if n in ("lo", "lo0")), None)
