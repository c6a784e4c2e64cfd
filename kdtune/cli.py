"""The ``kdtune`` command line: thin Click commands over the Python API.

Heavy modules (torch, ray, mlflow) are imported inside the commands so that ``kdtune --help``
stays fast. Bad input raises :class:`KdtuneError`, which :func:`main` prints as one line and
turns into exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from kdtune import __version__
from kdtune.errors import KdtuneError, SearchInterrupted

# Shared options, defined once.
DATA_OPTION = click.option(
    "--data",
    default="synthetic",
    show_default=True,
    help=(
        "'synthetic' (the embedded default) or a COCO 2017 root with annotations/ and <split>2017/."
    ),
)
DECODER_OPTION = click.option(
    "--decoder",
    default=None,
    help=(
        "How maps become persons: 'kdtune' (default) or 'reference' (the reference pipeline's "
        "own peak extraction and grouping)."
    ),
)
RESULTS_OPTION = click.option(
    "--results",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="KDTUNE_RESULTS",
    help="Results folder (default ./results; env KDTUNE_RESULTS).",
)


def _echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kdtune")
def cli() -> None:
    """Tune how much a pose student learns from its teacher, by validation COCO keypoint AP."""


# ---------------------------------------------------------------------------------------------
@cli.command()
def models() -> None:
    """List the three architectures with their parameter counts."""
    from kdtune.api import list_models

    for row in list_models():
        click.echo(f"{row['name']:<8} {row['params']:>10,}  {row['role']}: {row['description']}")


# ---------------------------------------------------------------------------------------------
@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML with TrainConfig keys (e.g. an exported best.yaml); flags override it.",
)
@click.option(
    "--level",
    type=click.Choice(["teacher", "first", "second", "chain"]),
    default=None,
    help=(
        "teacher, first (teacher→med), second (med→tiny) or chain (teacher→med→tiny)."
        "  [default: second]"
    ),
)
@click.option(
    "--alpha", type=float, default=None, help="Ground-truth weight α in [0, 1] (β = 1 − α)."
)
@click.option(
    "--schedule",
    default=None,
    help="β schedule, e.g. 'linear:0.9:0.5' or 'cosine:0.9:0.5,warmup=0.1'.",
)
@click.option("--alpha-second", type=float, default=None, help="chain only: α of the second level.")
@click.option("--schedule-second", default=None, help="chain only: β schedule of the second level.")
@click.option("--data", default=None, help="'synthetic' (default) or a COCO 2017 root.")
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--eval-every", type=int, default=None)
@click.option("--seed", type=int, default=None)
@click.option(
    "--teacher",
    "teacher_checkpoint",
    default=None,
    help="Teacher checkpoint (else a shipped one where it fits, or one kdtune trains and caches).",
)
@click.option("--teacher-epochs", type=int, default=None)
@click.option(
    "--teacher-recipe",
    type=click.Choice(["auto", "shipped", "reference", "ground_truth"]),
    default=None,
    help="How a missing teacher is found: auto (shipped where it fits, else reference).",
)
@click.option(
    "--teacher-targets",
    type=click.Choice(["bank", "live", "warped"]),
    default=None,
    help=(
        "Teacher maps per augmented view: bank (cached, exact; default), live (exact), "
        "warped (approximate)."
    ),
)
@click.option("--teacher-views", type=int, default=None, help="K: views per image in the bank.")
@click.option("--teacher-bank", default=None, help="A teacher bank folder to use (checked to fit).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--amp/--no-amp", default=None, help="bf16 autocast.")
@click.option("--channels-last/--no-channels-last", default=None)
@click.option("--max-train-images", type=int, default=None)
@DECODER_OPTION
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder: metrics.json, summary.json, checkpoints/.",
)
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in --output.")
@RESULTS_OPTION
def train(
    config_file: Path | None, output: Path, resume: bool, results: Path | None, **flags: Any
) -> None:
    """Train one net at one level with one weighting, printing each evaluated epoch."""
    from kdtune.api import train_run

    summary = train_run(
        config_file, flags, output=output, resume=resume, results=results, log=click.echo
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
@click.option("--arch", type=click.Choice(["teacher", "med", "tiny"]), required=True)
@DATA_OPTION
@click.option("--split", default="val", show_default=True)
@click.option(
    "--teacher-input-size",
    type=int,
    default=None,
    help="Feed the net this input size (the public teacher checkpoint was trained at 368).",
)
@DECODER_OPTION
@RESULTS_OPTION
def eval_(
    checkpoint: Path,
    arch: str,
    data: str,
    split: str,
    teacher_input_size: int | None,
    decoder: str | None,
    results: Path | None,
) -> None:
    """Evaluate a checkpoint (kdtune's or the public Lightweight-OpenPose one) by COCO
    keypoint AP."""
    from kdtune.api import evaluate_checkpoint

    _echo_json(
        evaluate_checkpoint(
            checkpoint,
            arch,
            data,
            split,
            results=results,
            net_input_size=teacher_input_size,
            decoder=decoder or "kdtune",
        )
    )


# ---------------------------------------------------------------------------------------------
@cli.group()
def teachers() -> None:
    """The teachers kdtune ships for its synthetic default."""


@teachers.command("list")
def teachers_list() -> None:
    """Each shipped teacher, its data and its measured val and test AP."""
    from kdtune.api import list_teachers

    _echo_json(list_teachers())


@teachers.command("pack")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write <arch>.pt and <arch>.json (default: the package's teachers folder).",
)
@RESULTS_OPTION
def teachers_pack(run: Path, out: Path | None, results: Path | None) -> None:
    """Make a run trained on the synthetic default a shipped teacher (float16, with its record)."""
    from kdtune.api import pack_teacher

    record = pack_teacher(run, out=out, results=results)
    click.echo(f"wrote {record['weights']}")
    _echo_json({"val": record["val"], "test": record["test"]})


# ---------------------------------------------------------------------------------------------
@cli.group()
def data() -> None:
    """Data sets: synthesize the embedded default, measure the decoding ceiling."""


@data.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--n-train", type=click.IntRange(1), default=4096, show_default=True)
@click.option("--n-val", type=click.IntRange(1), default=512, show_default=True)
@click.option("--n-test", type=click.IntRange(1), default=512, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def synth(out: Path, n_train: int, n_val: int, n_test: int, seed: int) -> None:
    """Write a synthetic COCO-format person-keypoints set (JPEGs + json), deterministic by seed."""
    from kdtune.api import synthesize

    synthesize(out, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
    click.echo(f"wrote {n_train}/{n_val}/{n_test} train/val/test images to {out}")


@data.command()
@DATA_OPTION
@click.option("--split", default="val", show_default=True)
@click.option("--input-size", type=int, default=128, show_default=True)
@click.option("--stride", type=int, default=8, show_default=True)
@click.option("--sigma", type=float, default=7.0, show_default=True)
@DECODER_OPTION
@RESULTS_OPTION
def ceiling(
    data: str,
    split: str,
    input_size: int,
    stride: int,
    sigma: float,
    decoder: str | None,
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
            decoder=decoder or "kdtune",
        )
    )


# ---------------------------------------------------------------------------------------------
TRACKING_OPTION = click.option(
    "--tracking-uri",
    default=None,
    envvar="MLFLOW_TRACKING_URI",
    help=(
        "MLflow tracking store or server (default sqlite:///<results>/mlflow.db; "
        "env MLFLOW_TRACKING_URI)."
    ),
)


@cli.command()
@click.argument("space_file", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check the file and print the space; run nothing.")
@click.option("--resume", is_flag=True, help="Continue an interrupted search of the same name.")
@click.option(
    "--address",
    default=None,
    envvar="RAY_ADDRESS",
    help="Join a running Ray cluster (env RAY_ADDRESS); default: start Ray locally.",
)
@click.option(
    "--follow-guidance",
    is_flag=True,
    help="Afterwards, run the points the tuning guidance recommends as a second search.",
)
@click.option("--no-progress", is_flag=True, help="No live view (for logs and CI).")
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
        click.echo(api.validate_space(space_file))
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
    """Bring MLflow up to date with search NAME's own records (after the tracking server was
    down): every trial's run, metrics and tags, none twice."""
    from kdtune import api

    done = api.sync(name, results=results, tracking_uri=tracking_uri)
    click.echo(f"synced search {done['search']} to {done['tracking_uri']}", err=True)
    _echo_json(done)


@cli.command()
@click.argument("space_file", type=click.Path(path_type=Path))
def validate(space_file: Path) -> None:
    """Check a search-space file and print the space (same as search --dry-run)."""
    from kdtune import api

    click.echo(api.validate_space(space_file))


@cli.command()
@click.argument("searches", nargs=-1)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "markdown"]),
    default="table",
    show_default=True,
)
@click.option("--sort", "sort_by", default="val_ap", show_default=True, help="Column to sort by.")
@click.option("--ascending", is_flag=True)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Save AP against α and against the schedule's parameters.",
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
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default=Path("best.yaml"), show_default=True
)
@click.option(
    "--holdout-split",
    default="test",
    show_default=True,
    help="Split for the held-out check (never used for selection).",
)
@click.option(
    "--no-holdout", is_flag=True, help="Only write the configuration; skip the held-out training."
)
@click.option(
    "--bootstrap",
    type=click.IntRange(10),
    default=2000,
    show_default=True,
    help="Bootstrap replicates (over images and seeds) for the 95% intervals.",
)
@click.option(
    "--seeds",
    type=click.IntRange(1, 100),
    default=2,
    show_default=True,
    help="New training seeds for the held-out check (each config trained once per seed).",
)
@RESULTS_OPTION
@TRACKING_OPTION
def export(
    search_name: str | None,
    output: Path,
    holdout_split: str,
    no_holdout: bool,
    bootstrap: int,
    seeds: int,
    results: Path | None,
    tracking_uri: str | None,
) -> None:
    """Write the recommended configuration of a search for `kdtune train --config`, checked
    on held-out data against the seed default, paired."""
    from kdtune import api

    payload = api.export(
        search_name,
        output,
        holdout_split=None if no_holdout else holdout_split,
        samples=bootstrap,
        seeds=seeds,
        results=results,
        tracking_uri=tracking_uri,
        log=click.echo,
    )
    click.echo(
        f"wrote {output}: {payload['train']['level']} level, "
        f"schedule {payload['train']['schedule']}"
    )
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
                click.echo(
                    f"held-out {holdout['split']} AP, {name:<9} {figures['ap']:.3f}  "
                    f"95% CI [{low:.3f}, {high:.3f}]  ({figures['schedule']}; seeds {seeds_text})"
                )
        click.echo(f"held-out verdict: {holdout['paired']['sentence']}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@RESULTS_OPTION
@TRACKING_OPTION
def ui(host: str, port: int, results: Path | None, tracking_uri: str | None) -> None:
    """Start the MLflow UI on the results store (one worker) and print its address."""
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
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
