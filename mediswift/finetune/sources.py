"""Fetching a downstream task's raw files into `<home>/raw/<the task's mirror folder>/`.

Downstream datasets publish no checksums, so a file is fetched whole (resumable) and a copy
already in place is kept; the task's data unit is keyed by the digests of what was fetched. A
copy whose content the task cannot load is moved aside by the stage that read it
(`mediswift.finetune.datasets.load_task`), so the next run fetches it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from mediswift.artifacts import safe_child
from mediswift.data.download import fetch_file
from mediswift.data.http import HttpClient
from mediswift.finetune.task import DownstreamTask


def raw_name(task: DownstreamTask, url: str) -> str:
    """Where `url` goes under `<home>/raw`: the layout below the task's base URL (configured or
    upstream), in the task's folder; a file from elsewhere (PQA-A, say) under its host and path
    (two hub files may share a name), a local file under a digest of its folder."""
    if "://" in url:
        parts = urlsplit(url)
        rel = parts.netloc + parts.path
    else:
        folder = hashlib.sha256(str(Path(url).parent).encode()).hexdigest()[:12]
        rel = f"local/{folder}/{Path(url).name}"
    for base in (task.settings.url, task.upstream):
        base = base.rstrip("/") + "/"
        if base != "/" and url.startswith(base):
            rel = url[len(base) :]
            break
    return task.mirror_folder.rstrip("/") + "/" + rel.split("?")[0]


def fetch_task_files(
    client: HttpClient,
    task: DownstreamTask,
    home: Path,
    resolve: Callable[[str], str],
    eval_only: bool = False,
) -> dict[str, str]:
    """Fetch every file the task declares (or, `eval_only`, those its dev and test come from);
    role -> path relative to `home`."""
    raw = home / "raw"
    out = {}
    sources = task.eval_sources() if eval_only else task.sources()
    for role, url in sources.items():
        name = raw_name(task, url)
        fetch_file(client, resolve(url), safe_child(raw, name))
        out[role] = f"raw/{name}"
    return out
