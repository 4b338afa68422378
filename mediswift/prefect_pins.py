"""Prefect's configuration files for CLI runs: Prefect's own, never files found in the home.

A CLI run keeps Prefect's state in `<home>/prefect` (PREFECT_HOME), and Prefect reads two
configuration files from there when it is imported:

- `logging.yml`, handed to `logging.config.dictConfig`, whose `()` keys name any callable to
  construct: a planted `(): subprocess.Popen` filter runs a command;
- `profiles.toml`, whose active profile sets any Prefect setting, the path of the logging file
  among them.

So before Prefect is imported both paths are pinned, through the environment (which outranks a
profile), to the files the installed Prefect ships: its default logging configuration and its
default profiles, exactly what a fresh home gives. A path the user set in the environment is
kept: the environment is the user's, the home may not be. Found without importing Prefect
(the library never imports it).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
from collections.abc import MutableMapping
from pathlib import Path

# The environment variables Prefect reads each path from (both names of the logging one), and
# each shipped file's place in the Prefect package.
LOGGING_VARS = ("PREFECT_LOGGING_SETTINGS_PATH", "PREFECT_LOGGING_CONFIG_PATH")
PROFILES_VAR = "PREFECT_PROFILES_PATH"
SHIPPED = {LOGGING_VARS: "logging/logging.yml", (PROFILES_VAR,): "settings/profiles.toml"}


def prefect_package() -> Path:
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("Prefect is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def pin_config_files(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Point Prefect's logging and profiles paths at the files Prefect ships, unless the
    environment names them already; the variables set."""
    env = os.environ if environ is None else environ
    package = prefect_package()
    pinned: dict[str, str] = {}
    for names, rel in SHIPPED.items():
        if any(env.get(n) for n in names):
            continue
        shipped = package / rel
        if not shipped.is_file():  # a Prefect that moved it: fail loudly, do not fall back
            raise RuntimeError(f"Prefect's own {rel} is missing from {package}")
        for n in names:
            env[n] = pinned[n] = str(shipped)
    return pinned


if __name__ == "__main__":  # `eval "$(python -m mediswift.prefect_pins)"` (deployments/serve.sh)
    for name, value in pin_config_files().items():
        print(f"export {name}={shlex.quote(value)}")
