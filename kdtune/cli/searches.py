"""The commands about searches: ``search``, ``sync``, ``rejudge``, ``validate``, ``compare``,
``export``, ``ui``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kdtune.cli.options import (
    RESULTS_OPTION,
    TRACKING_OPTION,
    echo_json,
    option,
    output_option,
)
from kdtune.config import (
    SPLITS,
)
from kdtune.schedules import words


@click.command()
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

    from kdtune.console import format_answer, summary_table

    result, report, uri = outcome.result, outcome.report, outcome.tracking_uri
    # the summary leads with the answer, then the trials; the table fits the terminal and prose
    # wraps at words; lines that name paths and values are never broken by rich (soft_wrap), so
    # they copy whole whatever the width
    console = Console()
    console.line()  # never on the live view's last line
    console.print(format_answer(result), soft_wrap=True, markup=False)  # "[spec]" is text
    if outcome.teacher_ap is not None:
        console.print(f"teacher: val AP {outcome.teacher_ap:.4f}")
    warning = outcome.teacher_warning()
    if warning and not result.withheld:  # the answer says it where the record knows the teacher
        console.print(f"[bold red]warning:[/] {warning}")
    console.print(summary_table(result))
    console.print(report.to_text(), markup=False)
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


@click.command()
@click.argument("name")
@RESULTS_OPTION
@TRACKING_OPTION
def sync(name: str, results: Path | None, tracking_uri: str | None) -> None:
    """Bring MLflow up to date with search NAME's own records, after its server was down.

    Every trial's run, metrics and tags are logged, none twice."""
    from kdtune import api

    done = api.sync(name, results=results, tracking_uri=tracking_uri)
    click.echo(f"synced search {done['search']} to {done['tracking_uri']}", err=True)
    echo_json(done)


@click.command()
@click.argument("name")
@option(
    "--space",
    "space_file",
    type=click.Path(path_type=Path),
    default=None,
    default_text="the space file the search ran",
    help="The space file whose confirm settings judge the race.",
)
@output_option(
    type=click.Path(path_type=Path),
    default=None,
    default_text="print only",
    help="Also write the new verdict block (JSON) here; search.json is not changed.",
)
@RESULTS_OPTION
def rejudge(name: str, space_file: Path | None, output: Path | None, results: Path | None) -> None:
    """Judge search NAME's confirmation race again from its stored runs, under this kdtune.

    The race is replayed round by round (nothing is trained) and its verdict block printed."""
    from kdtune import api

    done = api.rejudge(name, results=results, space_file=space_file, output=output)
    click.echo(
        f"search {name}: {done['rounds_replayed']} of {done['rounds_stored']} stored rounds "
        f"replayed ({done['stopped']}); stored recommendation "
        f"{words(done['stored_recommended'] or '') or 'none'}, now {words(done['recommended'])}"
    )
    click.echo(done["text"])
    if output is not None:
        click.echo(f"wrote {output}", err=True)


@click.command()
@click.argument("space_file", type=click.Path(path_type=Path))
def validate(space_file: Path) -> None:
    """Check a search-space file and print the space (the same as search --dry-run)."""
    from kdtune import api

    click.echo(api.validate_space(space_file))


@click.command()
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


@click.command()
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
    click.echo(f"wrote {output}: {payload['train']['level']} level, {words(spec)} [{spec}]")
    click.echo("answer (the search's, as its summary shows it):")
    click.echo("\n".join(f"  {line}" for line in payload["answer"]["text"].splitlines()))
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


@click.command()
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
