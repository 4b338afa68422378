"""What every MediSwift task shares: caching on content, persisted under MEDISWIFT_HOME.

Convention: every cached task takes `key: str` as a parameter, the content key of the unit it
produces (see `mediswift.artifacts`). The cache key is that key plus the task's source, so a
task is Cached exactly when the same content was produced by the same code, never on its
`INPUTS` alone. Cache records live in `<home>/prefect-cache`, next to the artifacts they stand
for; when the artifact itself is missing (deleted by hand), the cache is refreshed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Task
from prefect.cache_policies import TASK_SOURCE, CacheKeyFnPolicy, CachePolicy

from mediswift.artifacts import Artifact


def _key_param(context: Any, parameters: dict[str, Any]) -> str | None:
    return parameters.get("key")


def content_cache(home: Path) -> CachePolicy:
    policy = TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=_key_param)
    return policy.configure(key_storage=str(home / "prefect-cache"))


def cached(task: Task, home: Path, artifact: Artifact, **options: Any) -> Task:
    """`task` bound to the content cache for `artifact` (refreshed when it is not on disk)."""
    return task.with_options(
        cache_policy=content_cache(home),
        persist_result=True,
        refresh_cache=not artifact.done(),
        **options,
    )
