"""Walk the README as a user would: run, in order, every code block marked `<!-- walk -->` (the
line before its fence), on a fresh copy of the project, and fail on the first command that
fails or prints a traceback.

  .venv/bin/python tests/readme_walk.py [--keep DIR]

The copy holds the project's files (tracked and new ones git does not ignore) with their times,
and this checkout's `.venv` as a link, so `make` installs nothing. What differs from a user's
walk, and why:
- the tiny test recipe stands for `demo` (`RECIPE` for make, `--recipe`, `recipe=`): minutes,
  not half an hour;
- the offline mirror is named by its absolute path (`MIRROR` for make, `../shared/mirror`):
  the copy is not beside the shared folder;
- the servers of `make serve` listen on free ports (`PREFECT_PORT`, `MLFLOW_PORT`, and the
  URLs that name 4200 / 5000): a test must not take the machine's default ports;
- `make test` and `make test-fast` are not walked: this walk is part of them.
Bash blocks run with `set -euo pipefail`; the Python blocks of one section share one
interpreter, as a user's session would.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARK = "<!-- walk -->"
TINY = "tests/recipes/tiny.yaml"
NOT_WALKED = re.compile(r"^\s*make test(-fast)?\b")
STEP_TIMEOUT_S = 900


@dataclass
class Block:
    section: str
    lang: str
    code: str
    line: int  # of the fence, 1-based


def walked_blocks(readme: str) -> list[Block]:
    """The marked fenced blocks of `readme`, in order, with the `## ` section each is in."""
    blocks, section, lines = [], "", readme.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"^```(\w+)", line)
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            if before.strip() == MARK:
                code = "\n".join(lines[i + 1 : end])
                blocks.append(Block(section, fence.group(1), code, i + 1))
            i = end
        i += 1
    return blocks


def as_walked(code: str, mirror: Path, ports: dict[str, int]) -> str:
    """A block's commands with the walk's stand-ins (see the module docstring)."""
    code = "\n".join(ln for ln in code.splitlines() if not NOT_WALKED.match(ln))
    code = re.sub(r"--recipe demo\b", f"--recipe {TINY}", code)
    code = re.sub(r"\brecipe=demo\b", f"recipe={TINY}", code)
    code = code.replace("../shared/mirror", str(mirror))
    code = code.replace("127.0.0.1:4200", f"127.0.0.1:{ports['PREFECT_PORT']}")
    return code.replace("127.0.0.1:5000", f"127.0.0.1:{ports['MLFLOW_PORT']}")


def copy_project(dest: Path) -> None:
    """The project's files as a fresh clone has them (plus files not yet committed), with their
    modification times (make must not see pyproject.toml as newer than the installed venv)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for rel in filter(None, (p.decode() for p in listed)):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(REPO / ".venv")
    # The venv is this checkout's, shared through the link: a pyproject.toml edited since the
    # last `make install` would make the walk's `make` reinstall it pointing at the copy (a
    # temporary folder), breaking the checkout's own imports once the copy is gone.
    os.utime(dest / "pyproject.toml", (0, 0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def walk_env(mirror: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    for name in ("MEDISWIFT_HOME", "MEDISWIFT_MIRROR", "MEDISWIFT_SERVE_DIR", "VIRTUAL_ENV"):
        env.pop(name, None)
    return {**env, "RECIPE": TINY, "MIRROR": str(mirror), **{k: str(v) for k, v in ports.items()}}


def run_block(block: Block, code: str, cwd: Path, env: dict[str, str], log: Path) -> None:
    """Run one block (bash) or the Python of one section; raise naming the block on a failure
    or a traceback."""
    if block.lang in ("bash", "sh"):
        cmd = ["bash", "-c", f"set -euo pipefail\n{code}"]
    else:
        cmd = [str(cwd / ".venv" / "bin" / "python"), "-c", code]
    with open(log, "a") as out:
        out.write(f"\n=== README line {block.line} ({block.section}) ===\n{code}\n---\n")
    r = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S
    )
    with open(log, "a") as out:
        out.write(r.stdout + r.stderr)
    text = r.stdout + r.stderr
    if r.returncode != 0 or "Traceback (most recent call last)" in text:
        raise AssertionError(
            f"README line {block.line} ({block.section}) failed with {r.returncode}:\n"
            f"{code}\n--- output (end) ---\n{text[-4000:]}"
        )


def sessions(blocks: list[Block], mirror: Path, ports: dict[str, int]) -> list[tuple[Block, str]]:
    """What to run: each bash block alone; consecutive Python blocks of one section as one
    program (a user's interpreter session), named by its first block."""
    out: list[tuple[Block, str]] = []
    for block in blocks:
        code = as_walked(block.code, mirror, ports)
        last = out[-1][0] if out else None
        joined = last is not None and last.lang == block.lang == "python"
        if joined and last.section == block.section:  # type: ignore[union-attr]
            out[-1] = (last, f"{out[-1][1]}\n\n{code}")  # type: ignore[arg-type]
        else:
            out.append((block, code))
    return out


def walk(workdir: Path, mirror: Path) -> list[Block]:
    """Copy the project into `workdir` and walk its README there; returns the blocks walked."""
    copy_project(workdir)
    ports = {"PREFECT_PORT": _free_port(), "MLFLOW_PORT": _free_port()}
    env = walk_env(mirror, ports)
    log = workdir / "readme-walk.log"
    blocks = walked_blocks((workdir / "README.md").read_text())
    try:
        for block, code in sessions(blocks, mirror, ports):
            run_block(block, code, workdir, env, log)
    finally:  # whatever `make serve` started stops with the walk
        subprocess.run([str(workdir / "deployments" / "stop.sh")], cwd=workdir, env=env)
    return blocks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mirror", default=str(REPO.parent / "shared" / "mirror"))
    ap.add_argument("--keep", default=None, help="walk in this (new) folder and keep it")
    args = ap.parse_args()
    where = Path(args.keep or tempfile.mkdtemp(prefix="readme-walk-"))
    where.mkdir(parents=True, exist_ok=True)
    blocks = walk(where, Path(args.mirror).resolve())
    print(f"walked {len(blocks)} README blocks in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
