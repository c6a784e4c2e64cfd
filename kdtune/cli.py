"""The ``kdtune`` command line: thin Click commands over the Python API.

Conventions, checked by ``tests/test_cli.py``: every option has help and shows its default (its
value, or what happens when it is not given); a closed set of values is a ``click.Choice`` built
from the API's own constants (:mod:`kdtune.config`); the output of every command is
``-o/--output``; the nets are named ``teacher``, ``med``, ``tiny`` (``--net``) and a level is
what trains one from another (``--level``); listings print a table, or JSON with
``--format json``; the top-level help shows each command's whole one-line description.

Heavy modules (torch, ray, mlflow) are imported inside the commands so that ``kdtune --help``
stays fast. Bad input raises :class:`KdtuneError` (or a Click usage error), which :func:`main`
prints as one line and turns into exit code 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from kdtune import __version__
from kdtune.config import (
    DECODERS,
    DEVICES,
    LEVELS,
    NETS,
    SPLITS,
    STUDENT_OF,
    TEACHER_OF,
    TEACHER_RECIPES,
    TEACHER_TARGETS,
    TrainConfig,
)
from kdtune.errors import KdtuneError, SearchInterrupted
from kdtune.schedules import words

F = TypeVar("F", bound=Callable[..., Any])
DEFAULTS = TrainConfig()  # the defaults `kdtune train` shows are the config's own
LIST_FORMATS: tuple[str, ...] = ("table", "json")


class _Option(click.Option):
    """A Click option with old spellings that still parse but are left out of the help."""

    def __init__(self, *args: Any, hidden_aliases: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden_aliases = tuple(hidden_aliases)

    def _shown(self) -> list[str]:
        return [name for name in self.opts if name not in self.hidden_aliases]

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        opts = self.opts
        self.opts = self._shown()
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts

    def get_error_hint(self, ctx: click.Context | None) -> str:
        return " / ".join(f"'{name}'" for name in self._shown())


def option(
    *decls: str,
    help: str,
    default_text: str | None = None,
    hidden_aliases: Sequence[str] = (),
    **kwargs: Any,
) -> Callable[[F], F]:
    """``click.option`` with kdtune's conventions: help always, and the default shown: its
    value, or ``default_text`` where it is worked out when the option is not given; a switch
    says it is off."""
    text = help
    if default_text is not None:
        text += f"  [default: {default_text}]"
        kwargs["show_default"] = False
    elif kwargs.get("is_flag") and not any("/" in d for d in decls):
        text += "  [default: off]"
    else:
        kwargs.setdefault("show_default", True)
    if kwargs.get("envvar"):
        kwargs.setdefault("show_envvar", True)
    return click.option(*decls, cls=_Option, hidden_aliases=hidden_aliases, help=text, **kwargs)


class _Group(click.Group):
    """A group whose command list shows each command's whole one-line description (wrapped to
    the terminal, never cut)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, one_line(command)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def one_line(command: click.Command) -> str:
    """A command's one-line description: its short help, else its help's first paragraph."""
    text = command.short_help or (command.help or "").split("\n\n")[0]
    return " ".join(text.split())


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
    """Rows as aligned text columns (numbers right-aligned), under a header."""
    body = [list(header)] + [list(row) for row in rows]
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]
    aligned = set(right)
    lines = []
    for row in body:
        cells = [
            cell.rjust(width) if i in aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2))


class _InputSize(click.ParamType):
    """A net's input size in pixels, or ``auto`` (what its checkpoint was trained at)."""

    name = "auto|PIXELS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "auto" or isinstance(value, int):
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"auto or a whole number of pixels, got {value!r}", param, ctx)


# Shared options, defined once.
def data_option(**kwargs: Any) -> Callable[[F], F]:
    return option(
        "--data",
        default=DEFAULTS.data,
        help="'synthetic' (the embedded default) or a COCO 2017 root with annotations/ and "
        "<split>2017/.",
        **kwargs,
    )


DECODER_OPTION = option(
    "--decoder",
    type=click.Choice(DECODERS),
    default=DEFAULTS.decoder,
    help="How maps become persons: kdtune's decoder, or the reference pipeline's own peak "
    "extraction and grouping.",
)
SPLIT_OPTION = option(
    "--split", type=click.Choice(SPLITS), default="val", help="The split to evaluate on."
)
NET_OPTION = option(
    "--net",
    "--arch",
    "net",
    type=click.Choice(NETS),
    required=True,
    hidden_aliases=("--arch",),
    help="Which net the checkpoint holds (`kdtune models` lists them).",
)
RESULTS_OPTION = option(
    "--results",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="KDTUNE_RESULTS",
    default_text="./results",
    help="Results folder: searches, caches, the MLflow store.",
)
TRACKING_OPTION = option(
    "--tracking-uri",
    default=None,
    envvar="MLFLOW_TRACKING_URI",
    default_text="sqlite:///<results>/mlflow.db",
    help="MLflow tracking store or server.",
)
FORMAT_OPTION = option(
    "--format",
    "fmt",
    type=click.Choice(LIST_FORMATS),
    default="table",
    help="A table for people, JSON for programs.",
)


def output_option(**kwargs: Any) -> Callable[[F], F]:
    """``-o/--output``, the one name of every command's output (``--out`` still parses)."""
    return option("-o", "--output", "--out", "output", hidden_aliases=("--out",), **kwargs)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kdtune")
def cli() -> None:
    """Tune how much a pose student learns from its teacher, by validation COCO keypoint AP."""


# ---------------------------------------------------------------------------------------------
@cli.command()
@FORMAT_OPTION
def models(fmt: str) -> None:
    """List the three nets (teacher, med, tiny) with their parameter counts and roles."""
    from kdtune.api import list_models

    rows = list_models()
    if fmt == "json":
        _echo_json(rows)
        return
    click.echo(
        _table(
            ("net", "parameters", "role", "layers"),
            ((r["name"], f"{r['params']:,}", r["role"], r["description"]) for r in rows),
            right=(1,),
        )
    )


# ---------------------------------------------------------------------------------------------
_LEVEL_HELP = ", ".join(
    f"{level} ({STUDENT_OF[level]} from {TEACHER_OF[level] or 'the ground truth alone'})"
    for level in LEVELS
    if level in STUDENT_OF
)


@cli.command()
@option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    default_text="none: the options below",
    help="YAML with TrainConfig keys (e.g. an exported best.yaml); options given override it.",
)
@option(
    "--level",
    type=click.Choice(LEVELS),
    default=DEFAULTS.level,
    help=f"Which net to train, and from which teacher: {_LEVEL_HELP}, or chain (med, then tiny "
    "from it).",
)
@option(
    "--alpha",
    type=float,
    default=None,
    default_text=words(DEFAULTS.schedule),
    help="Ground-truth weight α in [0, 1]; the teacher's weight is β = 1 − α.",
)
@option(
    "--schedule",
    default=None,
    default_text=f"{DEFAULTS.schedule} = {words(DEFAULTS.schedule)}",
    help="β schedule instead of a fixed α, e.g. linear:0.9:0.5 (β 0.9 → 0.5) or "
    "cosine:0.9:0.5,warmup=0.1.",
)
@option(
    "--alpha-second",
    type=float,
    default=None,
    default_text=words(DEFAULTS.schedule_second),
    help="chain only: α of the second level (tiny from med).",
)
@option(
    "--schedule-second",
    default=None,
    default_text=f"{DEFAULTS.schedule_second} = {words(DEFAULTS.schedule_second)}",
    help="chain only: β schedule of the second level.",
)
@data_option()
@option("--epochs", type=click.IntRange(1), default=DEFAULTS.epochs, help="Training epochs.")
@option(
    "--batch-size", type=click.IntRange(1), default=DEFAULTS.batch_size, help="Images per step."
)
@option("--lr", type=float, default=DEFAULTS.lr, help="Adam learning rate (for batch 16).")
@option(
    "--eval-every",
    type=click.IntRange(1),
    default=DEFAULTS.eval_every,
    help="Evaluate on the validation split every N epochs.",
)
@option("--seed", type=int, default=DEFAULTS.seed, help="Training seed (weights, order, views).")
@option(
    "--teacher",
    "teacher_checkpoint",
    default=None,
    default_text="a shipped teacher where one fits, else found by --teacher-recipe",
    help="Teacher checkpoint (kdtune's or the public Lightweight-OpenPose layout).",
)
@option(
    "--teacher-input-size",
    type=_InputSize(),
    default=None,
    default_text=f"{DEFAULTS.teacher_input_size}: the size the teacher's checkpoint was trained "
    "at (368 for the public layout)",
    help="The teacher's input size in pixels, or auto; one that contradicts the checkpoint is "
    "refused.",
)
@option(
    "--teacher-epochs",
    type=click.IntRange(1),
    default=DEFAULTS.teacher_epochs,
    help="Epochs of a teacher kdtune has to train first (cached).",
)
@option(
    "--teacher-recipe",
    type=click.Choice(TEACHER_RECIPES),
    default=DEFAULTS.teacher_recipe,
    help="How a missing teacher is found: auto (shipped where it fits, else reference), "
    "shipped, reference (trained as the reference pipeline did), ground_truth.",
)
@option(
    "--teacher-targets",
    type=click.Choice(TEACHER_TARGETS),
    default=DEFAULTS.teacher_targets,
    help="Teacher maps per augmented view: bank (cached, exact), live (exact, every batch), "
    "warped (approximate).",
)
@option(
    "--teacher-views",
    type=int,
    default=DEFAULTS.teacher_views,
    help="K: augmented views per image in the bank.",
)
@option(
    "--teacher-bank",
    default=None,
    default_text="found or built under the results' cache",
    help="A teacher bank folder to use (checked to fit).",
)
@option("--device", type=click.Choice(DEVICES), default=DEFAULTS.device, help="Where to train.")
@option("--amp/--no-amp", default=DEFAULTS.amp, help="bf16 autocast.")
@option(
    "--channels-last/--no-channels-last",
    default=DEFAULTS.channels_last,
    help="channels_last memory layout (faster on CPUs and GPUs).",
)
@option(
    "--max-train-images",
    type=click.IntRange(1),
    default=None,
    default_text="all",
    help="Train on the first N training images only.",
)
@DECODER_OPTION
@output_option(
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder: metrics.json, summary.json, model.pt, checkpoints/.",
)
@option("--resume", is_flag=True, help="Continue from the newest checkpoint in --output.")
@RESULTS_OPTION
@click.pass_context
def train(
    ctx: click.Context,
    config_file: Path | None,
    output: Path,
    resume: bool,
    results: Path | None,
    **flags: Any,
) -> None:
    """Train one net at one level with one weighting, printing each evaluated epoch."""
    from kdtune.api import train_run

    # an option left at its default does not override the --config file
    given = {
        name: value
        for name, value in flags.items()
        if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT
    }
    summary = train_run(
        config_file, given, output=output, resume=resume, results=results, log=click.echo
    )
    click.echo(f"wrote {output / 'metrics.json'} and {output / 'summary.json'}")
    _echo_json(
        {
            "final": summary["final"],
            "parameters": summary["parameters"],
            "wall_s": round(summary["wall_s"], 1),
            "images_per_s": round(summary["images_per_s"], 1),
        }
    )


# ---------------------------------------------------------------------------------------------
@cli.command("eval")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@NET_OPTION
@data_option()
@SPLIT_OPTION
@option(
    "--teacher-input-size",
    type=click.IntRange(8),
    default=None,
    default_text="the size the checkpoint was trained at (368 for the public layout)",
    help="Feed the net this input size; one that contradicts the checkpoint is refused.",
)
@DECODER_OPTION
@RESULTS_OPTION
def eval_(
    checkpoint: Path,
    net: str,
    data: str,
    split: str,
    teacher_input_size: int | None,
    decoder: str,
    results: Path | None,
) -> None:
    """Evaluate a checkpoint (kdtune's or the public Lightweight-OpenPose one) by COCO keypoint
    AP."""
    from kdtune.api import evaluate_checkpoint

    _echo_json(
        evaluate_checkpoint(
            checkpoint,
            net,
            data,
            split,
            results=results,
            net_input_size=teacher_input_size,
            decoder=decoder,
        )
    )


# ---------------------------------------------------------------------------------------------
@cli.group(cls=_Group)
def teachers() -> None:
    """The teachers kdtune ships for its synthetic default: list them, pack a new one."""


@teachers.command("list")
@FORMAT_OPTION
def teachers_list(fmt: str) -> None:
    """Each shipped teacher, its data and its measured val and test AP."""
    from kdtune.api import list_teachers

    rows = list_teachers()
    if fmt == "json":
        _echo_json(rows)
        return
    click.echo(
        _table(
            ("net", "data", "val AP", "test AP", "weights"),
            (
                (r["arch"], r["data"], f"{r['val/ap']:.3f}", f"{r['test/ap']:.3f}", r["weights"])
                for r in rows
            ),
            right=(2, 3),
        )
    )
    for r in rows:
        click.echo(f"{r['arch']}: produced by {r['produced_by']}")


@teachers.command("pack")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@output_option(
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    default_text="the package's teachers folder",
    help="Where to write <net>.pt and <net>.json.",
)
@RESULTS_OPTION
def teachers_pack(run: Path, output: Path | None, results: Path | None) -> None:
    """Make a run trained on the synthetic default a shipped teacher (float16, with its record)."""
    from kdtune.api import pack_teacher

    record = pack_teacher(run, out=output, results=results)
    click.echo(f"wrote {record['weights']}")
    _echo_json({"val": record["val"], "test": record["test"]})


# ---------------------------------------------------------------------------------------------
@cli.group(cls=_Group)
def data() -> None:
    """Data sets: synthesize the embedded default, measure the decoding ceiling."""


@data.command()
@output_option(
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="A new (or empty) folder for the set.",
)
@option("--n-train", type=click.IntRange(1), default=4096, help="Training images.")
@option("--n-val", type=click.IntRange(1), default=512, help="Validation images.")
@option("--n-test", type=click.IntRange(1), default=512, help="Held-out test images.")
@option("--seed", type=int, default=0, help="The set is a function of this seed.")
def synth(output: Path, n_train: int, n_val: int, n_test: int, seed: int) -> None:
    """Write a synthetic COCO-format person-keypoints set (JPEGs + json), deterministic by seed."""
    from kdtune.api import synthesize

    synthesize(output, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
    click.echo(f"wrote {n_train}/{n_val}/{n_test} train/val/test images to {output}")


@data.command()
@data_option()
@SPLIT_OPTION
@option(
    "--input-size",
    type=click.IntRange(8),
    default=DEFAULTS.input_size,
    help="Letterboxed input size.",
)
@option("--stride", type=click.IntRange(1), default=DEFAULTS.stride, help="Pixels per map cell.")
@option("--sigma", type=float, default=DEFAULTS.sigma, help="Heatmap Gaussian's sigma (pixels).")
@DECODER_OPTION
@RESULTS_OPTION
def ceiling(
    data: str,
    split: str,
    input_size: int,
    stride: int,
    sigma: float,
    decoder: str,
    results: Path | None,
) -> None:
    """AP reached by decoding the ground-truth targets: the best any net can do at this size."""
    from kdtune.api import data_ceiling

    _echo_json(
        data_ceiling(
            data,
            split,
            input_size=input_size,
            stride=stride,
            sigma=sigma,
            results=results,
            decoder=decoder,
        )
    )


# ---------------------------------------------------------------------------------------------
@cli.command()
@click.argument("space_file", type=click.Path(path_type=Path))
@option(
    "--dry-run",
    is_flag=True,
    help="Check the file (and that its data and teacher exist) and print the space; run nothing.",
)
@option("--resume", is_flag=True, help="Continue an interrupted search of the same name.")
@option(
    "--address",
    default=None,
    envvar="RAY_ADDRESS",
    default_text="start Ray locally",
    help="Join a running Ray cluster at HOST:PORT.",
)
@option(
    "--follow-guidance",
    is_flag=True,
    help="Afterwards, run the points the tuning guidance recommends as a second search.",
)
@option("--no-progress", is_flag=True, help="No live view (for logs and CI).")
@RESULTS_OPTION
@TRACKING_OPTION
def search(
    space_file: Path,
    dry_run: bool,
    resume: bool,
    address: str | None,
    follow_guidance: bool,
    no_progress: bool,
    results: Path | None,
    tracking_uri: str | None,
) -> None:
    """Search fixed ratios and β schedules: Ray Tune runs, Optuna samples and prunes on val AP."""
    from kdtune import api

    if dry_run:
        click.echo(api.validate_space(space_file, results))
        return
    outcome = api.search(
        space_file,
        results=results,
        address=address,
        resume=resume,
        tracking_uri=tracking_uri,
        progress=not no_progress,
        log=click.echo,
    )
    _print_search(outcome)
    if follow_guidance:
        followed = api.follow_guidance(
            outcome,
            results=results,
            address=address,
            tracking_uri=tracking_uri,
            progress=not no_progress,
            log=click.echo,
        )
        if followed is not None:
            _print_search(followed)


def _print_search(outcome: Any) -> None:
    from rich.console import Console

    from kdtune.console import format_best, format_confirmation, summary_table

    result, report, uri = outcome.result, outcome.report, outcome.tracking_uri
    # the table fits the terminal and prose wraps at words; lines that name paths and values
    # are never broken by rich (soft_wrap), so they copy whole whatever the width
    console = Console()
    console.line()  # never on the live view's last line
    console.print(summary_table(result))
    console.print(format_best(result), soft_wrap=True)
    if confirmation := format_confirmation(result):
        console.print(confirmation, soft_wrap=True)
    if outcome.teacher_ap is not None:
        console.print(f"teacher: val AP {outcome.teacher_ap:.4f}")
    warning = outcome.teacher_warning()
    if warning:
        console.print(f"[bold red]warning:[/] {warning}")
    console.print(report.to_text())
    folder = Path(result.results_dir)
    console.print(f"results: {folder}  (search.json, optuna.db, ray/)", soft_wrap=True)
    if outcome.next_space is not None:
        console.print(
            f"guidance points as a ready search: kdtune search {outcome.next_space}",
            soft_wrap=True,
        )
    console.print(f"tracking: {uri}  (kdtune compare {result.name}; kdtune ui)", soft_wrap=True)
    if outcome.tracking_lag:
        console.print(f"[bold yellow]warning:[/] {outcome.tracking_lag}", soft_wrap=True)
    if outcome.links:
        where = "" if uri.startswith("http") else " (once `kdtune ui` serves it)"
        console.print(f"MLflow runs{where}: {outcome.links['runs']}", soft_wrap=True)
        console.print(f"MLflow compare view: {outcome.links['compare']}", soft_wrap=True)


@cli.command()
@click.argument("name")
@RESULTS_OPTION
@TRACKING_OPTION
def sync(name: str, results: Path | None, tracking_uri: str | None) -> None:
    """Bring MLflow up to date with search NAME's own records, after its server was down.

    Every trial's run, metrics and tags are logged, none twice."""
    from kdtune import api

    done = api.sync(name, results=results, tracking_uri=tracking_uri)
    click.echo(f"synced search {done['search']} to {done['tracking_uri']}", err=True)
    _echo_json(done)


@cli.command()
@click.argument("space_file", type=click.Path(path_type=Path))
def validate(space_file: Path) -> None:
    """Check a search-space file and print the space (the same as search --dry-run)."""
    from kdtune import api

    click.echo(api.validate_space(space_file))


@cli.command()
@click.argument("searches", nargs=-1)
@option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "markdown"]),
    default="table",
    help="A table for people; csv, json or markdown for programs and reports.",
)
@option("--sort", "sort_by", default="val_ap", help="Column to sort by.")
@option("--ascending", is_flag=True, help="Sort from the lowest value up.")
@option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    default_text="none",
    help="Save AP against α and against the schedule's parameters to this image file.",
)
@RESULTS_OPTION
@TRACKING_OPTION
def compare(
    searches: tuple[str, ...],
    fmt: str,
    sort_by: str,
    ascending: bool,
    plot: Path | None,
    results: Path | None,
    tracking_uri: str | None,
) -> None:
    """Compare the trials of one or more searches, read back from MLflow."""
    from kdtune import api

    comparison = api.compare(
        list(searches),
        fmt=fmt,
        sort_by=sort_by,
        ascending=ascending,
        plot=plot,
        results=results,
        tracking_uri=tracking_uri,
    )
    click.echo(comparison.text)
    if comparison.plot is not None:
        click.echo(f"wrote {comparison.plot}", err=fmt != "table")


@cli.command()
@click.argument("search_name", required=False)
@output_option(
    type=click.Path(path_type=Path),
    default=Path("best.yaml"),
    help="The recommended configuration, for `kdtune train --config`.",
)
@option(
    "--holdout-split",
    type=click.Choice(SPLITS),
    default="test",
    help="Split for the held-out check (never one the search selected on).",
)
@option(
    "--holdout-fraction",
    type=float,
    default=None,
    default_text="the search's own carve where the data has no test keypoints, else none",
    help="Judge on this fixed, seeded fraction of train, in (0, 0.5], instead of --holdout-split "
    "(at most what the search held out of its trials).",
)
@option(
    "--no-holdout", is_flag=True, help="Only write the configuration; skip the held-out training."
)
@option(
    "--bootstrap",
    type=click.IntRange(10),
    default=2000,
    help="Bootstrap replicates (over images and seeds) for the 95% intervals.",
)
@option(
    "--seeds",
    type=click.IntRange(1, 100),
    default=2,
    help="New training seeds for the held-out check (each config trained once per seed).",
)
@RESULTS_OPTION
@TRACKING_OPTION
def export(
    search_name: str | None,
    output: Path,
    holdout_split: str,
    holdout_fraction: float | None,
    no_holdout: bool,
    bootstrap: int,
    seeds: int,
    results: Path | None,
    tracking_uri: str | None,
) -> None:
    """Write a search's recommended configuration, checked on held-out data against the seed
    default."""
    from kdtune import api

    payload = api.export(
        search_name,
        output,
        holdout_split=None if no_holdout else holdout_split,
        holdout_fraction=holdout_fraction,
        samples=bootstrap,
        seeds=seeds,
        results=results,
        tracking_uri=tracking_uri,
        log=click.echo,
    )
    spec = payload["train"]["schedule"]
    click.echo(f"wrote {output}: {payload['train']['level']} level, {words(spec)} ({spec})")
    confirmation = payload["validation"].get("confirmation")
    if confirmation:
        click.echo(f"validation (confirmation): {confirmation['verdict']}")
    else:
        click.echo(f"validation: {payload['validation']} (unconfirmed: one seed)")
    holdout = payload.get("holdout")
    if holdout:
        seeds_text = ", ".join(str(s) for s in holdout["seeds"])
        for name in ("best", "reference"):
            if name in holdout:
                figures = holdout[name]
                low, high = figures["ap_ci95"]
                weighting = words(figures["schedule"])
                click.echo(
                    f"held-out {holdout['split']} AP, {name:<9} {figures['ap']:.3f}  "
                    f"95% CI [{low:.3f}, {high:.3f}]  ({weighting}; seeds {seeds_text})"
                )
        carve = holdout.get("carve")
        if carve:
            click.echo(
                f"held-out part: {carve['held_images']} train images ({carve['fraction']:g} of "
                f"train, seed {carve['seed']}), never trained on"
            )
        click.echo(f"held-out verdict: {holdout['paired']['sentence']}")


@cli.command()
@option("--host", default="127.0.0.1", help="Address to listen on.")
@option("--port", type=click.IntRange(1, 65535), default=5000, help="Port to listen on.")
@RESULTS_OPTION
@TRACKING_OPTION
def ui(host: str, port: int, results: Path | None, tracking_uri: str | None) -> None:
    """Start the MLflow UI on the results store (one worker) and print its links."""
    from kdtune import api

    api.ui(
        host=host,
        port=port,
        results=results,
        tracking_uri=tracking_uri,
        ready=_echo_ui_links,
    )


def _echo_ui_links(uri: str, url: str, links: dict[str, Any]) -> None:
    click.echo(f"MLflow UI for {uri} at {url}  (Ctrl-C stops it)")
    for search, link in links.items():
        click.echo(f"  {search}: runs {link['runs']}")
        click.echo(f"  {search}: compare its {link['trials']} trials {link['compare']}")


# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning bad input into one line and exit code 2."""
    try:
        cli.main(args=argv, prog_name="kdtune", standalone_mode=False)
    except KdtuneError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except SearchInterrupted as exc:  # its state saved: one line, 130 (SIGINT) or 143 (SIGTERM)
        click.echo(exc.line, err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # one line too, with where the help is
        where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        click.echo(f"error: {' '.join(exc.format_message().split())}{where}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
