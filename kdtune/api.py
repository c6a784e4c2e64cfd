"""The Python API behind the CLI commands: each function does one command's work and returns
plain data, so the CLI only parses flags and prints."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdtune.checkpoint_ap import evaluate_checkpoint as evaluate_checkpoint
from kdtune.config import ARCHS as ARCHS  # the model names (`kdtune eval --net`)
from kdtune.config import TrainConfig, alpha_to_schedule
from kdtune.errors import KdtuneError

# commands whose work lives in its own module, re-exported so that the CLI finds every command
# here (these modules import torch only inside their functions)
from kdtune.search import rejudge as rejudge  # kdtune rejudge NAME
from kdtune.search.outcome import SearchOutcome as SearchOutcome
from kdtune.teachers.pack import list_teachers as list_teachers
from kdtune.teachers.pack import pack_teacher as pack_teacher


def load_yaml_mapping(path: Path, what: str = "config") -> dict[str, Any]:
    """Read a YAML mapping: :func:`kdtune.yamlfile.load_yaml_mapping` (``yaml.safe_load``,
    duplicate keys refused; errors name the file)."""
    from kdtune.yamlfile import load_yaml_mapping as load

    return load(path, what)


def build_train_config(config_file: Path | None, flags: Mapping[str, Any]) -> TrainConfig:
    """A TrainConfig from an optional YAML file (``train:`` block or top level) plus CLI flags."""
    raw: dict[str, Any] = {}
    where = "flags"
    if config_file is not None:
        loaded = load_yaml_mapping(config_file)
        raw = (
            dict(loaded.get("train", loaded))
            if isinstance(loaded.get("train"), dict)
            else dict(loaded)
        )
        # an exported best.yaml carries provenance beside the settings
        for key in ("validation", "source", "kdtune"):
            raw.pop(key, None)
        where = str(config_file)
    given = {k: v for k, v in flags.items() if v is not None}
    if "alpha" in given and "schedule" in given:
        raise KdtuneError("--alpha and --schedule: give one of them, not both")
    if "alpha" in given:
        raw.pop("schedule", None)
        raw["schedule"] = alpha_to_schedule(given.pop("alpha"), where="--alpha")
    if "alpha_second" in given:
        raw["schedule_second"] = alpha_to_schedule(
            given.pop("alpha_second"), where="--alpha-second"
        )
    raw.update(given)  # the CLI's flag names are the TrainConfig keys
    return TrainConfig.from_dict(raw, where=where)


def train_run(
    config_file: Path | None,
    flags: Mapping[str, Any],
    *,
    output: Path,
    resume: bool = False,
    results: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``kdtune train``: validate everything, then train into ``output``."""
    from kdtune.train import fit

    cfg = build_train_config(config_file, flags)
    resume_from = None
    if resume:
        ckpts = sorted((output / "checkpoints").glob("epoch_*")) if output.is_dir() else []
        if not ckpts:
            raise KdtuneError(f"--resume: no checkpoint under {output / 'checkpoints'}")
        resume_from = ckpts[-1]
    elif (output / "summary.json").exists() or (output / "metrics.json").exists():
        raise KdtuneError(
            f"--output: {output} already holds a run; pass --resume or choose a new folder"
        )
    if cfg.teacher_checkpoint and not Path(cfg.teacher_checkpoint).is_file():
        raise KdtuneError(f"--teacher: no such file {cfg.teacher_checkpoint}")
    if cfg.teacher_bank:
        from kdtune.bank import TeacherBank

        TeacherBank(Path(cfg.teacher_bank))  # a folder that is not a bank fails here, not later
    return fit(cfg, None, workdir=output, resume_from=resume_from, results=results, log=log)


def list_models() -> list[dict[str, Any]]:
    """``kdtune models``: the three architectures with their real parameter counts."""
    from kdtune.models import describe_models

    return describe_models()


def synthesize(out: Path, *, n_train: int, n_val: int, n_test: int, seed: int) -> Path:
    """``kdtune data synth``: a synthetic COCO-format set in a new (or empty) folder."""
    from kdtune.data.synth import write_synthetic

    if out.exists() and any(out.iterdir()):
        raise KdtuneError(f"--output: {out} exists and is not empty; choose a new folder")
    return write_synthetic(out, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)


def data_ceiling(
    data: str,
    split: str = "val",
    *,
    input_size: int = 128,
    stride: int = 8,
    sigma: float = 7.0,
    results: Path | None = None,
    decoder: str = "kdtune",
) -> dict[str, Any]:
    """``kdtune data ceiling``: decode the ground-truth targets themselves (with ``decoder``)
    and evaluate them."""
    from kdtune.data.sources import resolve_data
    from kdtune.evaluate import ceiling

    cfg = TrainConfig(
        data=data, input_size=input_size, stride=stride, sigma=sigma, decoder=decoder
    ).validate()
    poseset = resolve_data(data, split, cfg.input_size, results)
    figures = ceiling(poseset, cfg.stride, cfg.sigma, cfg.paf_thickness, decoder=cfg.decoder)
    return {
        "data": data,
        "split": split,
        "decoder": decoder,
        "images": len(poseset),
        "input_size": input_size,
        "stride": stride,
        **{f"val/{k}": v for k, v in figures.items()},
    }


# ---------------------------------------------------------------------------------------------
# kdtune search


def validate_space(space_file: Path, results: Path | None = None) -> str:
    """``kdtune search --dry-run`` / ``kdtune validate``: check a space file and describe it,
    then what the search does before its trials (:mod:`kdtune.preflight`)."""
    from kdtune import preflight
    from kdtune.space import check_paths, describe, load_space

    space = load_space(space_file)
    check_paths(space)  # a data root or teacher that does not exist is refused here too
    preflight.check(space)  # a split's files missing, a teacher input size contradicted
    return "\n".join([describe(space), *preflight.plan_lines(space, results)])


def search(
    space_file: Path,
    *,
    results: Path | None = None,
    address: str | None = None,
    resume: bool = False,
    tracking_uri: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> SearchOutcome:
    """``kdtune search``: the search pipeline (:mod:`kdtune.search`): validate, prepare the
    teacher once, run the trials under Ray Tune with Optuna sampling and pruning, confirm,
    log to MLflow from the driver, report; the guidance's next points as a ready space file."""
    from kdtune.search import SearchRequest, run_pipeline

    request = SearchRequest(
        Path(space_file), results, address, resume, tracking_uri, progress, log or _silent
    )
    return run_pipeline(request)


def sync(
    name: str, *, results: Path | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    """``kdtune sync NAME``: bring MLflow up to date with a search's own records (after a
    tracking server was down): every trial's child run, metrics and tags, none twice."""
    from kdtune.search import sync as sync_search

    return sync_search(name, results=results, tracking_uri=tracking_uri)


def guided_space(outcome: SearchOutcome) -> Path | None:
    """``--follow-guidance``: the space file of the points the guidance recommends, if any."""
    return outcome.next_space


def _silent(_message: str) -> None:
    pass


def follow_guidance(
    outcome: SearchOutcome,
    *,
    results: Path | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> SearchOutcome | None:
    """``kdtune search --follow-guidance``: run the points the guidance recommended after
    ``outcome`` as a second search; None where it recommends none."""
    say = log or (lambda _m: None)
    follow = guided_space(outcome)
    if follow is None:
        say("the guidance recommends no new point: nothing to follow")
        return None
    say(f"following the guidance: {follow}")
    return search(
        follow,
        results=results,
        address=address,
        tracking_uri=tracking_uri,
        progress=progress,
        log=log,
    )


# ---------------------------------------------------------------------------------------------
# kdtune compare, export, ui


@dataclass
class Comparison:
    text: str  # the table in the asked format
    plot: Path | None  # the plot written, if one was asked for


def compare(
    searches: list[str] | None,
    *,
    fmt: str = "table",
    sort_by: str = "val_ap",
    ascending: bool = False,
    plot: Path | None = None,
    results: Path | None = None,
    tracking_uri: str | None = None,
) -> Comparison:
    """``kdtune compare``: the trials of one or more searches, read back from MLflow."""
    from kdtune.compare import answers_text, compare_frame, plot_comparison, render
    from kdtune.paths import results_dir
    from kdtune.tracking import check_tracking, load_verdicts, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, results_dir(results))
    check_tracking(uri)
    frame = compare_frame(uri, searches or None, sort_by=sort_by, ascending=ascending)
    written = plot_comparison(frame, plot) if plot is not None else None
    text = render(frame, fmt)
    if fmt in ("table", "markdown"):  # CSV and JSON stay one record per run
        text += answers_text(load_verdicts(uri, searches or None))
    return Comparison(text, written)


def export(
    search_name: str | None,
    output: Path,
    *,
    holdout_split: str | None = "test",
    samples: int = 2000,
    seeds: int = 2,
    results: Path | None = None,
    tracking_uri: str | None = None,
    log: Callable[[str], None] | None = None,
    holdout_fraction: float | None = None,
) -> dict[str, Any]:
    """``kdtune export``: the recommended configuration of a search, checked on a held-out
    split (or the held-out carve of train) against the seed default, paired."""
    from kdtune.export import export_best
    from kdtune.paths import results_dir

    return export_best(
        search_name,
        output,
        results=results_dir(results),
        tracking_uri=tracking_uri,
        holdout_split=holdout_split,
        holdout_fraction=holdout_fraction,
        samples=samples,
        seeds=seeds,
        log=log,
    )


def ui(
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    results: Path | None = None,
    tracking_uri: str | None = None,
    ready: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> None:
    """``kdtune ui``: serve the MLflow UI on the results store until interrupted; ``ready`` is
    called with (store, address, each search's links) once it answers."""
    import signal

    from kdtune.paths import results_dir
    from kdtune.tracking import (
        resolve_tracking_uri,
        search_links,
        start_ui,
        stop_ui,
        ui_url,
        wait_until_up,
    )

    uri = resolve_tracking_uri(tracking_uri, results_dir(results))
    process = start_ui(uri, host=host, port=port, workers=1)
    url = ui_url(host, port)

    def on_sigterm(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # docker stop, systemd: end as Ctrl-C does

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        wait_until_up(url, 120, process)
        if ready is not None:
            ready(uri, url, search_links(uri, url))
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_ui(process)
        signal.signal(signal.SIGTERM, previous)
