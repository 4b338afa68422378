"""The checkpoint layout on disk: the file names and format number, reading its JSON and
safetensors files (a damaged one raises `DamagedCheckpoint`), and the `step_<n>` folders of a
run (listed, set aside, pruned). What goes in the files and how it is written and read back is
`mediswift.train.checkpoint`; decoding format 2's stored tensors, `checkpoint_decode`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from mediswift.artifacts import pid_alive
from mediswift.model.gpt import GPTConfig

# 2: masked tensors as kept values + packed masks (format 1: all dense, bool masks).
FORMAT = 2
READABLE_FORMATS = (1, 2)
STEP_PREFIX = "step_"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
MASKS_FILE = "masks.safetensors"
TRAIN_TENSORS_FILE = "train_state.safetensors"
TRAIN_JSON_FILE = "train_state.json"
DIGESTS_FILE = "digests.json"
TENSOR_FILES = (MODEL_FILE, MASKS_FILE, TRAIN_TENSORS_FILE)


class DamagedCheckpoint(ValueError):
    """A checkpoint file that is cut short, fails to parse or no longer matches its digest."""

    def __init__(self, file: Path, why: str):
        super().__init__(f"{file}: {why}")
        self.file = file


def read_json(file: Path) -> Any:
    """A checkpoint's JSON file, a `DamagedCheckpoint` when it does not parse."""
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedCheckpoint(file, f"not JSON ({e})") from e


def load_tensor_file(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, a `DamagedCheckpoint` when cut short or unparseable."""
    try:
        return load_file(str(file))
    except SafetensorError as e:
        raise DamagedCheckpoint(file, str(e)) from e


def read_train_json(path: Path) -> dict[str, Any]:
    """train_state.json of checkpoint `path`; {} in a weights-only checkpoint."""
    js = Path(path) / TRAIN_JSON_FILE
    return read_json(js) if js.is_file() else {}


def config_json(path: Path) -> dict[str, Any]:
    cfg_file = Path(path) / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint (no config.json)")
    data = read_json(cfg_file)
    if data.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{cfg_file}: unsupported checkpoint format {data.get('format')!r}")
    return data


def format_of(path: Path) -> int:
    return int(config_json(path)["format"])


def read_config(path: Path) -> GPTConfig:
    return GPTConfig.from_dict(config_json(path)["model"])


def checkpoint_bytes(path: Path) -> int:
    """What checkpoint directory `path` takes on disk: the sizes of its files."""
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"{STEP_PREFIX}{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete periodic checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _step_of(p.name) is not None]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX) :]))


def _step_of(name: str) -> int | None:
    """The step of a checkpoint folder's name; None for anything else (a set-aside `.bad-`)."""
    digits = name[len(STEP_PREFIX) :]
    return int(digits) if name.startswith(STEP_PREFIX) and digits.isdigit() else None


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint to `<name>.bad-<n>` (the first free n): kept to be looked
    at, never listed, resumed from or pruned again."""
    n = 1
    while (bad := path.with_name(f"{path.name}.bad-{n}")).exists():
        n += 1
    path.rename(bad)
    return bad


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` periodic checkpoints (and stale temp folders)."""
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in Path(root).glob(".tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
