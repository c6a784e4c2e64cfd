"""The commands about nets and data: ``models``, ``train``, ``eval``, ``teachers``, ``data``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from kdtune.cli.options import (
    DECODER_OPTION,
    DEFAULTS,
    FORMAT_OPTION,
    NET_OPTION,
    RESULTS_OPTION,
    SPLIT_OPTION,
    Group,
    InputSize,
    data_option,
    echo_json,
    option,
    output_option,
    table,
)
from kdtune.config import (
    DEVICES,
    LEVELS,
    STUDENT_OF,
    TEACHER_OF,
    TEACHER_RECIPES,
    TEACHER_TARGETS,
)
from kdtune.schedules import words


@click.command()
@FORMAT_OPTION
def models(fmt: str) -> None:
    """List the three nets (teacher, med, tiny) with their parameter counts and roles."""
    from kdtune.api import list_models

    rows = list_models()
    if fmt == "json":
        echo_json(rows)
        return
    click.echo(
        table(
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


@click.command()
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
    type=InputSize(),
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
    echo_json(
        {
            "final": summary["final"],
            "parameters": summary["parameters"],
            "wall_s": round(summary["wall_s"], 1),
            "images_per_s": round(summary["images_per_s"], 1),
        }
    )


# ---------------------------------------------------------------------------------------------
@click.command("eval")
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

    echo_json(
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
@click.group(cls=Group)
def teachers() -> None:
    """The teachers kdtune ships for its synthetic default: list them, pack a new one."""


@teachers.command("list")
@FORMAT_OPTION
def teachers_list(fmt: str) -> None:
    """Each shipped teacher, its data and its measured val and test AP."""
    from kdtune.api import list_teachers

    rows = list_teachers()
    if fmt == "json":
        echo_json(rows)
        return
    click.echo(
        table(
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
    """Make a run trained on a synthetic source a shipped teacher (float16, with its record)."""
    from kdtune.api import pack_teacher

    record = pack_teacher(run, out=output, results=results)
    click.echo(f"wrote {record['weights']}")
    echo_json({"val": record["val"], "test": record["test"]})


# ---------------------------------------------------------------------------------------------
@click.group(cls=Group)
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

    echo_json(
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
