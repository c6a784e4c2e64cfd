"""kdtune's conventions for its Click options, and what every command shares: an option
always has help and shows its default; old spellings still parse, hidden from the help; a group
lists its commands' whole one-line descriptions; listings print a table or JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from kdtune.config import (
    DECODERS,
    NETS,
    SPLITS,
    TrainConfig,
)

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


class Group(click.Group):
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


def table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
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


def echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2))


class InputSize(click.ParamType):
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
