"""The torchrun command of one variant: one node (`--standalone`) or several (c10d rendezvous).

Every node of a multi-node run runs the same command. torchrun's c10d rendezvous (a TCP store
on `rdzv_endpoint`, hosted by the first agent that binds it) gathers `nnodes` agents under one
`rdzv_id`, assigns the ranks and starts `nproc` workers on each; the workers then form one
process group (NCCL on CUDA, gloo on CPU). Nothing in the command names the node, so a Slurm
step, a Kubernetes pod or a person at a shell can start it anywhere:

  python -m mediswift.train.launch --spec <variant dir>/spec.json      # every node
  python -m mediswift.train.launch --spec ... --print                  # show the torchrun line

The variant directory must be on a file system every node sees: rank 0 (on whichever node
the rendezvous puts it) writes the checkpoints and the record, and every rank reads the newest
checkpoint when a run resumes. The settings come from the spec's `pretrain` config (`nproc`,
`nnodes`, `rdzv_endpoint`, `rdzv_id`); the flags override them, for a scheduler that knows the
head node only at start (see deployments/slurm/pretrain.sbatch).

One node listens on loopback only: its torchrun runs inside `python -m mediswift.train.launch
--torchrun <torchrun args>`, which reads `--standalone` as a static rendezvous whose TCP store
is bound to 127.0.0.1 (a `TCPStore` server binds every interface whatever host it is given, so
c10d on localhost or a loopback `--rdzv-endpoint` does not), and points the workers' gloo and
NCCL sockets at the loopback interface. Several nodes bind the endpoint the user gives.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mediswift.sections import PretrainConfig

ENTRY = "mediswift.train.pretrain"  # what each worker runs (its `main` reads --spec)


@dataclass(frozen=True)
class Launch:
    """How many processes run a variant and how the nodes find each other."""

    nproc: int = 1  # processes per node
    nnodes: int = 1
    rdzv_endpoint: str | None = None  # host:port of the c10d store (several nodes)
    rdzv_id: str | None = None  # shared by the nodes of one run

    def __post_init__(self) -> None:
        if self.nproc < 1 or self.nnodes < 1:
            raise ValueError(f"nproc {self.nproc} and nnodes {self.nnodes} must be >= 1")
        if self.multi_node and not (self.rdzv_endpoint and self.rdzv_id):
            raise ValueError("a multi-node launch needs a rendezvous endpoint (host:port) and id")

    @property
    def multi_node(self) -> bool:
        return self.nnodes > 1

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def in_process(self) -> bool:
        """One process in all: no torchrun, the caller trains in its own process."""
        return self.world_size == 1

    def torchrun_args(self) -> list[str]:
        """torchrun's options: a private rendezvous on one node, c10d across several."""
        if not self.multi_node:
            return ["--standalone", "--nproc-per-node", str(self.nproc)]
        return [
            "--nnodes",
            str(self.nnodes),
            "--nproc-per-node",
            str(self.nproc),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            str(self.rdzv_endpoint),
            "--rdzv-id",
            str(self.rdzv_id),
        ]


def launch_for(cfg: PretrainConfig, default_id: str, **overrides: Any) -> Launch:
    """The launch a variant's settings ask for; `overrides` (not None) win. The rendezvous id
    defaults to `default_id` (the variant's unit key), so a re-run of the same variant joins
    under the same id and two variants never meet in one rendezvous."""
    launch = Launch(
        nproc=cfg.nproc,
        nnodes=cfg.nnodes,
        rdzv_endpoint=cfg.rdzv_endpoint,
        rdzv_id=cfg.rdzv_id or default_id,
    )
    launch = replace(launch, **{k: v for k, v in overrides.items() if v is not None})
    cfg.grad_accum(launch.world_size)  # refuses a launch the global batch does not divide
    return launch


def unit_key(spec_out_dir: str | Path) -> str:
    """A variant's unit key: the name of its directory (`<home>/pretrain/units/<key>`)."""
    return Path(spec_out_dir).name


def torchrun_command(launch: Launch, spec_file: str | Path) -> list[str]:
    """This node's part of the run: torchrun, starting `launch.nproc` workers of the entry.

    One node runs torchrun through `AGENT_FLAG` of this module: the same torchrun, whose
    `--standalone` rendezvous listens on 127.0.0.1 only (`loopback_torchrun`)."""
    runner = ["torch.distributed.run"] if launch.multi_node else [__name__, AGENT_FLAG]
    return [
        sys.executable,
        "-m",
        *runner,
        *launch.torchrun_args(),
        "-m",
        ENTRY,
        "--spec",
        str(spec_file),
    ]


AGENT_FLAG = "--torchrun"  # `python -m mediswift.train.launch --torchrun <torchrun args>`
LOOPBACK_BACKEND = "mediswift-loopback"  # `mediswift.train.distributed.LoopbackRendezvous`


def loopback_args(args: list[str]) -> list[str]:
    """torchrun's arguments with `--standalone` (c10d on localhost, whose store listens on
    every interface) replaced by the loopback rendezvous: one node, a free port of 127.0.0.1."""
    if "--standalone" not in args:
        return args
    import uuid

    rest = [a for a in args if a != "--standalone"]
    return [
        "--nnodes",
        "1",
        "--rdzv-backend",
        LOOPBACK_BACKEND,
        "--rdzv-endpoint",
        "127.0.0.1:0",
        "--rdzv-id",
        str(uuid.uuid4()),
        *rest,
    ]


def loopback_torchrun(args: list[str]) -> int:
    """Run torchrun in this process with nothing listening beyond loopback: the rendezvous
    store on 127.0.0.1 (`mediswift.train.distributed.LoopbackRendezvous`), and the workers'
    gloo and NCCL sockets on the loopback interface (unless the environment names one)."""
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry
    from torch.distributed.run import main as torchrun_main

    from mediswift.train.distributed import loopback_handler, loopback_interface

    rendezvous_handler_registry.register(LOOPBACK_BACKEND, loopback_handler)
    lo = loopback_interface()
    if lo is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", lo)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", lo)
    torchrun_main(loopback_args(args))
    return 0


def node_command(launch: Launch, spec_file: str | Path) -> str:
    """The shell line that starts the same part on another node (for logs and schedulers)."""
    args = ["python", "-m", "mediswift.train.launch", "--spec", str(spec_file)]
    args += ["--nproc-per-node", str(launch.nproc), "--nnodes", str(launch.nnodes)]
    if launch.multi_node:
        args += ["--rdzv-endpoint", str(launch.rdzv_endpoint), "--rdzv-id", str(launch.rdzv_id)]
    return shlex.join(args)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m mediswift.train.launch",
        description="start this node's part of a variant's training (torchrun; the same "
        "command on every node)",
    )
    ap.add_argument("--spec", required=True, help="the variant's spec.json (on a shared path)")
    ap.add_argument("--nproc-per-node", type=int, help="processes on this node (spec: nproc)")
    ap.add_argument("--nnodes", type=int, help="nodes of the run (spec: nnodes)")
    ap.add_argument("--rdzv-endpoint", help="host:port of the c10d rendezvous (spec)")
    ap.add_argument("--rdzv-id", help="rendezvous id (spec, else the variant's unit key)")
    ap.add_argument("--print", action="store_true", help="print the torchrun command, run nothing")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [AGENT_FLAG]:
        return loopback_torchrun(argv[1:])
    args = _parser().parse_args(argv)
    spec = json.loads(Path(args.spec).read_text())
    launch = launch_for(
        PretrainConfig.model_validate(spec["config"]),
        unit_key(spec["out_dir"]),
        nproc=args.nproc_per_node,
        nnodes=args.nnodes,
        rdzv_endpoint=args.rdzv_endpoint,
        rdzv_id=args.rdzv_id,
    )
    cmd = torchrun_command(launch, args.spec)
    if args.print:
        print(shlex.join(cmd))
        return 0
    sys.stdout.flush()
    # Replace this process: signals of the scheduler (srun, kubelet) reach torchrun directly.
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
