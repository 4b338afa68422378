"""Single-node torchrun listens on loopback only: during `nproc: 2` pre-training no process of
the run (the launcher, torchrun's agent, the workers) has a listening socket on any address
but 127.0.0.1 / ::1. Read from /proc/net/tcp and tcp6, matched to the run's sockets."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mediswift.train.launch import Launch, loopback_args, torchrun_command

REPO = Path(__file__).resolve().parents[1]
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column

LAUNCHER = """
import sys
sys.path.insert(0, "tests")
from pathlib import Path
from training_fixtures import tiny_pretrain_config, tiny_variant
from mediswift.train.pretrain import launch_variant
cfg = tiny_pretrain_config(seed=1, steps=60, checkpoint_every=30, eval_every=60, log_every=10)
launch_variant(tiny_variant(Path(sys.argv[1]), cfg), nproc=2, timeout=300)
"""


def _address(hex_addr: str, family: int) -> str:
    raw = bytes.fromhex(hex_addr)
    if family == socket.AF_INET:
        return socket.inet_ntop(family, raw[::-1])
    return socket.inet_ntop(family, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))


def listening() -> dict[str, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket of this machine."""
    out = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == LISTEN:
                addr, port = f[1].split(":")
                out[f[9]] = (_address(addr, family), int(port, 16))
    return out


def socket_inodes(pid: int) -> set[str]:
    found = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_single_node_commands_use_the_loopback_rendezvous() -> None:
    cmd = torchrun_command(Launch(nproc=2), "s.json")
    assert cmd[1:4] == ["-m", "mediswift.train.launch", "--torchrun"]
    args = loopback_args(cmd[4:])
    assert "--standalone" not in args
    assert args[args.index("--rdzv-endpoint") + 1] == "127.0.0.1:0"
    assert args[args.index("--rdzv-backend") + 1] == "mediswift-loopback"
    multi = Launch(nproc=2, nnodes=2, rdzv_endpoint="head:29400", rdzv_id="x")
    assert torchrun_command(multi, "s.json")[1:3] == ["-m", "torch.distributed.run"]


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_nproc_2_pretraining_listens_on_loopback_only(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("GLOO_SOCKET_IFNAME", None)
    env.pop("NCCL_SOCKET_IFNAME", None)
    out = tmp_path / "v"
    run = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(out)], cwd=REPO, env=env)
    seen: dict[tuple[str, int], str] = {}  # (address, port) -> the process holding it
    workers = 0
    deadline = time.monotonic() + 300
    try:
        while run.poll() is None and time.monotonic() < deadline:
            procs = [psutil.Process(run.pid), *psutil.Process(run.pid).children(recursive=True)]
            workers = max(workers, len(procs))
            sockets = listening()
            for p in procs:
                for inode in socket_inodes(p.pid):
                    if inode in sockets:
                        seen[sockets[inode]] = " ".join(p.cmdline()[:4]) if p.is_running() else ""
            time.sleep(0.05)
    except psutil.NoSuchProcess:
        pass
    finally:
        if run.poll() is None:
            run.kill()
    assert run.wait() == 0, "the nproc 2 run failed"
    assert workers >= 4  # launcher, torchrun agent, two workers
    assert seen, "no listening socket seen: the check saw nothing of the run"
    beyond = {addr: who for addr, who in seen.items() if not is_loopback(addr[0])}
    assert beyond == {}, f"listening beyond loopback: {beyond}"
