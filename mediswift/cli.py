"""The `mediswift` command.

mediswift run --recipe demo [--stages download,parse,filter] [--mirror DIR] [--home DIR]
mediswift run --recipe paper-xl --dry-run
mediswift flops --model xl --sparsity 0.75 --tokens 104.86e9
mediswift export --recipe demo --variant tiny-s75 [--task hoc] --out exports/tiny-s75
mediswift recipes
mediswift verify [--home DIR]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import traceback
from importlib import metadata
from pathlib import Path
from types import ModuleType

from mediswift import __version__, interrupt
from mediswift.config import RECIPES_DIR, PipelineConfig, home_dir, load_recipe
from mediswift.console import (
    disk_full,
    log_traceback,
    no_space,
    one_line,
    quiet_console,
    run_log,
    server_log,
)
from mediswift.dry_run import dry_run
from mediswift.model.sizes import SIZES
from mediswift.overrides import parse_set
from mediswift.prefect_pins import pin_config_files
from mediswift.sources import UPSTREAM

MIRROR_HELP = (
    "local folder or URL standing for upstream ('none': upstream; default: the source this "
    "recipe last ran with in the home, else the recipe's)"
)


def package_version() -> str:
    """The installed distribution's version; a source tree run without installing it has
    only the package's own."""
    try:
        return metadata.version("mediswift")
    except metadata.PackageNotFoundError:
        return __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mediswift",
        description="Sparse pre-training and soft-prompt fine-tuning of biomedical GPT models.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_flops(sub)
    _add_export(sub)
    sub.add_parser("recipes", help="list the recipes in deployments/recipes")
    _add_verify(sub)
    return p


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run",
        help="run stages of a recipe through the Prefect flow",
        description="Run stages of a recipe through the `mediswift` Prefect flow. Without a "
        "Prefect server configured (PREFECT_API_URL) a temporary one starts in-process.",
    )
    run.add_argument("--recipe", default="demo", help="recipe name or YAML path (default: demo)")
    run.add_argument(
        "--stages",
        default=None,
        help="comma-separated stages, run in pipeline order (default: all; a wrong name is "
        "answered with the list)",
    )
    run.add_argument("--mirror", default=None, help=MIRROR_HELP)
    run.add_argument(
        "--home", default=None, help="artifact root (default: MEDISWIFT_HOME or .mediswift)"
    )
    run.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe setting, e.g. --set pretrain.steps=100 (repeatable)",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="print the plan, token budget and FLOPs"
    )
    run.add_argument(
        "--verbose", action="store_true", help="print tracebacks (always in <home>/logs/)"
    )
    run.add_argument(
        "--gpu", default="h100", choices=["a100", "h100"], help="dry run: GPU of the estimate"
    )
    run.add_argument("--mfu", type=float, default=0.4, help="dry run: model FLOPs utilisation")


def _add_flops(sub: argparse._SubParsersAction) -> None:
    flops = sub.add_parser("flops", help="training FLOPs of a model size (Hoffmann et al. 2022)")
    flops.add_argument("--model", required=True, help=f"size name: {', '.join(SIZES)}")
    flops.add_argument("--sparsity", type=float, default=0.0)
    flops.add_argument("--tokens", type=float, required=True, help="training tokens, e.g. 104.86e9")
    flops.add_argument("--vocab-size", type=int, default=42_384)
    flops.add_argument("--seq-len", type=int, default=1024)


def _add_export(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser(
        "export",
        help="write a pre-trained variant or a fine-tuned point as a Hugging Face model",
        description="Write a checkpoint of this recipe's home as a Hugging Face model directory "
        "(GPT-2 architecture, our tokenizer with trust_remote_code, a model card).",
    )
    export.add_argument("--recipe", default="demo", help="recipe name or YAML path")
    export.add_argument("--home", default=None, help="artifact root (default: MEDISWIFT_HOME)")
    export.add_argument("--set", dest="sets", action="append", default=[], metavar="K=V")
    export.add_argument("--mirror", default=None, help=MIRROR_HELP)
    export.add_argument("--variant", required=True, help="pre-trained variant, e.g. tiny-s75")
    export.add_argument("--task", default=None, help="export the best fine-tuned point instead")
    export.add_argument("--out", required=True, help="output directory")


def _add_verify(sub: argparse._SubParsersAction) -> None:
    verify = sub.add_parser(
        "verify",
        help="check every manifest, shard and checkpoint of a home against its digests",
        description="Check a whole home (manifests, shard and checkpoint digests) and print "
        "one line per damaged file saying what the next run makes again; exit 1 if any is "
        "damaged. Nothing is changed.",
    )
    verify.add_argument(
        "--home", default=None, help="artifact root (default: MEDISWIFT_HOME or .mediswift)"
    )


class BadSettings(Exception):
    """A recipe, override or stage selection that cannot run: exit status 2."""


def cmd_run(args: argparse.Namespace) -> int:
    try:
        overrides = parse_set(args.sets)
        home = home_dir(args.home)
        cfg = load_recipe(args.recipe, overrides, args.mirror, home)
        registry = flows_registry(home)
        stages = registry.parse_stages(args.stages)
    except (FileNotFoundError, ValueError) as e:
        raise BadSettings(str(e)) from e
    if args.dry_run:
        print(dry_run(cfg, home, registry.plan(cfg, home), stages, args.gpu, args.mfu))
        return 0
    check_devices(cfg, stages)
    from flows.pipeline import mediswift, tie_temporary_server_to_this_process
    from mediswift.overrides import Overrides

    # A killed run leaves no server behind; the server's own output goes to the home's logs.
    tie_temporary_server_to_this_process(server_log(home))

    args.home_path = home
    args.log_path = run_log(home)
    if not args.verbose:
        quiet_console()
    with interrupt.stop_on_signals():
        result = mediswift(
            recipe=args.recipe,
            stages=stages,
            overrides=Overrides(extra=overrides),
            home=str(home),
            mirror=cfg.mirror or UPSTREAM,  # the source decided here, "none" included
        )
    print("\nOutputs:")
    for stage, path in result.items():
        print(f"  {stage:<10} {path}")
    if "report" in result:
        server = cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        print(f"\nReport:     {result['report']}\n{ui_commands(home, server)}")
    return 0


def prefect_environment(home: Path) -> None:
    """Settings read when Prefect is imported: its local state and results live in the home,
    not in the user's ~/.prefect, and it sends no telemetry (a closed network logs errors for
    it). Set before anything imports Prefect."""
    os.environ["MEDISWIFT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(home / "prefect-results"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Tasks outside `tasks.common.cached` would use Prefect's default cache, whose records are
    # pickles: off, so nothing read back from the home can run code.
    os.environ.setdefault("PREFECT_TASKS_DEFAULT_NO_CACHE", "true")
    # The temporary server can take longer than Prefect's 20 s default on a busy small machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # An empty PREFECT_API_URL (`export PREFECT_API_URL=` to leave a server) means none: a
    # temporary server. Left set, Prefect's event client would try to reach "" and log errors.
    if not os.environ.get("PREFECT_API_URL", "").strip():
        os.environ.pop("PREFECT_API_URL", None)
    # Prefect's own logging and profiles files, not ones found in its home: a planted
    # logging.yml would run code when Prefect is imported (mediswift.prefect_pins).
    pin_config_files()


def flows_registry(home: Path) -> ModuleType:
    """The pipeline's stage registry (`flows.registry`; its flows import Prefect, set up for
    this home first)."""
    prefect_environment(home)
    from flows import registry

    return registry


def check_devices(cfg: PipelineConfig, stages: list[str]) -> None:
    """Refuse a device setting this machine does not have, before anything runs."""
    wanted = {"pretrain": cfg.pretrain.device, "finetune": cfg.finetune.device}
    named = {s: d for s, d in wanted.items() if s in stages and d not in ("auto", "cpu")}
    if not named:
        return  # no torch import for the common case
    from mediswift.train.distributed import missing_device

    for stage, device in named.items():
        why = missing_device(device)
        if why:
            raise BadSettings(f"{stage}.device: {device!r}: {why}")


def ui_commands(home: Path, tracking_uri: str | None = None) -> str:
    """Commands that open this home's runs, as printed from where the run was started: the
    MLflow UI with `make serve`'s settings (one worker, no job runner) on the home's store, or
    the tracking server the runs went to, and the Prefect UI on the database that holds the
    run's flow runs (a temporary server's, unless one was configured)."""
    bin_dir = _relative(Path(sys.executable).parent)
    store = shlex.quote(f"sqlite:///{home / 'mlflow.db'}")  # a home may hold spaces
    mlflow = (
        f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {shlex.quote(str(bin_dir / 'mlflow'))} "
        f"server --host 127.0.0.1 --port 5000 --workers 1 --backend-store-uri {store}"
    )
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        mlflow = f"{tracking_uri} (the tracking server this run used)"
    api = os.environ.get("PREFECT_API_URL")
    if api:
        prefect = f"{api.removesuffix('/api')} (the Prefect server this run used)"
    else:
        prefect_home = shlex.quote(str(_relative(Path(os.environ["PREFECT_HOME"]))))
        prefect = (
            f"PREFECT_HOME={prefect_home} {shlex.quote(str(bin_dir / 'prefect'))} "
            "server start --host 127.0.0.1 --port 4200"
        )
    return (
        f"MLflow UI:  {mlflow}\n            then http://127.0.0.1:5000\n"
        f"Prefect UI: {prefect}\n            then http://127.0.0.1:4200/runs"
    )


def _relative(path: Path) -> Path:
    """`path` relative to the working directory when under it (shorter to copy), else as is."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def cmd_export(args: argparse.Namespace) -> int:
    from mediswift.export import export_model
    from mediswift.export_select import choose

    try:
        home = home_dir(args.home)
        cfg = load_recipe(args.recipe, parse_set(args.sets), args.mirror, home)
    except (FileNotFoundError, ValueError) as e:
        raise BadSettings(str(e)) from e
    arts = flows_registry(home).plan(cfg, home)
    choice = choose(
        home, arts, args.variant, args.task, cfg.evaluate.plot_mode, cfg.pretrain.seq_len
    )
    card = {
        **choice.card,
        "recipe": cfg.name,
        "tokens": cfg.pretrain.tokens,
        "pmc_commercial_only": cfg.download.pmc_commercial_only,
    }
    out = export_model(
        choice.checkpoint,
        arts["vocab"].path,
        Path(args.out),
        card,
        choice.prompt,
        trained_len=choice.trained_len,
        source_budget=choice.source_budget,
        max_new_tokens=choice.max_new_tokens,
    )
    print(f"exported {card['name']} to {out}")
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    from mediswift.flops import main_flops

    total = main_flops(args.model, args.sparsity, args.tokens, args.vocab_size, args.seq_len)
    print(f"{total:.4e}")
    return 0


def bounded(text: str, limit: int = 20_000) -> str:
    """`text` cut to its first and last `limit // 2` characters: an error may quote an input,
    and the console gets an excerpt (the run's log file has the rest)."""
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return f"{text[: limit // 2]}\n[... {cut:,} characters cut ...]\n{text[-limit // 2 :]}"


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 for bad settings, 1 for a fault while running; errors are one line
    (`--verbose` adds the traceback, which the run's log file always has)."""
    args = _parser().parse_args(argv)
    args.log_path = None
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "flops":
            return cmd_flops(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "verify":
            from mediswift.verify import main as verify_main

            return verify_main(home_dir(args.home))
        for path in sorted(RECIPES_DIR.glob("*.yaml")):
            print(path.stem)
        return 0
    except KeyboardInterrupt:
        interrupt.request()  # whatever still runs stops (or is stopped) within seconds
        print(
            f"mediswift: interrupted ({interrupt.signal_name()}): finished units and the last "
            "checkpoint are kept; run the same command again to resume",
            file=sys.stderr,
        )
        return interrupt.exit_status()
    except Exception as e:
        running = args.log_path is not None  # the run had started: a runtime fault
        bad_input = isinstance(e, BadSettings | FileNotFoundError | ValueError)
        where = ""
        if running:
            log_traceback(args.log_path, e)
            where = f" (details: {args.log_path})"
        if getattr(args, "verbose", False):
            print(bounded("".join(traceback.format_exception(e))), file=sys.stderr)
        message = one_line(e)
        home = getattr(args, "home_path", None)
        if no_space(e) or (home is not None and disk_full(home)):
            # Say what to do about it, whatever layer noticed first (a store's migration that
            # failed half-way may report something else entirely).
            message = (
                f"no space left on device under {home}: free space, then run again ({message})"
            )
        print(f"mediswift: error: {message}{where}", file=sys.stderr)
        return 2 if bad_input and not running else 1


if __name__ == "__main__":
    sys.exit(main())
