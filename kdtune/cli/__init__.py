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

import sys

import click

from kdtune import __version__
from kdtune.cli.nets import data, eval_, models, teachers, train
from kdtune.cli.options import Group, one_line
from kdtune.cli.searches import (
    _print_search,
    compare,
    export,
    rejudge,
    search,
    sync,
    ui,
    validate,
)
from kdtune.errors import KdtuneError, SearchInterrupted

__all__ = ["_print_search", "cli", "main", "one_line"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kdtune")
def cli() -> None:
    """Tune how much a pose student learns from its teacher, by validation COCO keypoint AP."""


for _command in (
    models,
    train,
    eval_,
    teachers,
    data,
    search,
    sync,
    rejudge,
    validate,
    compare,
    export,
    ui,
):
    cli.add_command(_command)


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
