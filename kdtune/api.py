"""The Python API behind the CLI commands: each function does one command's work and returns
plain data, so the CLI only parses flags and prints."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# commands whose work lives in its own module, re-exported so that the CLI finds every command
# here (both modules import torch only inside their functions)
from kdtune.checkpoint_ap import evaluate_checkpoint as evaluate_checkpoint
from kdtune.config import ARCHS as ARCHS  # the model names (`kdtune eval --arch`)
from kdtune.config import TrainConfig, alpha_to_schedule
from kdtune.errors import KdtuneError, SearchInterrupted
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


def validate_space(space_file: Path) -> str:
    """``kdtune search --dry-run`` / ``kdtune validate``: check a space file and describe it."""
    from kdtune.space import check_paths, describe, load_space

    space = load_space(space_file)
    check_paths(space)  # a data root or teacher that does not exist is refused here too
    return describe(space)


@dataclass
class SearchOutcome:
    result: Any  # kdtune.results.SearchResult
    report: Any  # kdtune.diagnose.SearchReport
    tracking_uri: str
    next_space: Path | None  # the guidance's next points as a ready search-space file
    teacher_ap: float | None = None  # the level's teacher on the validation split
    links: dict[str, Any] | None = None  # MLflow UI links: runs, compare view (kdtune ui's address)
    tracking_lag: str | None = None  # one line when MLflow lagged behind the search

    def teacher_warning(self) -> str | None:
        """Why this search cannot speak to distillation, if its teacher is no better than its
        best student; None otherwise."""
        from dataclasses import replace

        result = self.result
        if result.teacher_val_ap is None and self.teacher_ap is not None:
            result = replace(result, teacher_val_ap=self.teacher_ap)
        return result.withheld


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
    """``kdtune search``: validate, prepare the teacher once, run the trials under Ray Tune with
    Optuna sampling and pruning, log every trial to MLflow from the driver, report.

    The guidance's next points are written as a ready search-space file beside the results.
    """
    from kdtune.paths import results_dir
    from kdtune.results import NEXT_POINTS_FILE, SEARCH_FILE
    from kdtune.searching import run_tracked
    from kdtune.space import check_paths, load_space
    from kdtune.tracking import check_tracking, resolve_tracking_uri

    say = log or (lambda _m: None)
    space = load_space(space_file)
    check_paths(space)
    root = results_dir(results)
    uri = resolve_tracking_uri(tracking_uri, root)
    check_tracking(uri)  # before any work: an unreachable server is refused at once
    from kdtune.tune import check_resources, check_start

    check_start(root / space.name, space, resume)  # before any work: refuse or resume early
    if address is None and not os.environ.get("RAY_ADDRESS"):  # a local Ray: this machine's
        import torch

        here = {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}
        check_resources(space.resources, here)

    base = TrainConfig.from_dict(space.trial_config(), where=str(space_file))
    say(f"preparing data and the {base.level} level's teacher (cached under {root / 'cache'})")
    teacher_ap = _prepare(base, root, say)
    settings = {**_space_settings(space), "teacher_val_ap": teacher_ap}

    def after_search(found: Any, live: Any, on_abandon: Any) -> Any:
        """After the trials, before the final logging: the teacher's AP (a teacher no better
        than its students withholds the recommendation) and the confirmation stage."""
        found.teacher_val_ap = teacher_ap
        if space.confirm is not None:
            found = _confirm(space, found, root, address, live, progress, say, on_abandon)
        found.save(root / space.name / SEARCH_FILE)
        return found

    # live logging off Tune's loop; every trial diagnosed against the search's best and the
    # report logged at the end (guarded: the report and next points never wait on MLflow)
    tracked = run_tracked(
        space,
        Path(space_file),
        root=root,
        uri=uri,
        settings=settings,
        resume_command=_resume_command(space_file, results),
        address=address,
        resume=resume,
        progress=progress,
        after_search=after_search,
    )
    result, report = tracked.result, tracked.report
    next_space = write_guided_space(
        space_file, space, report.next_points, root / space.name / NEXT_POINTS_FILE
    )
    links = _links(uri, space.name) if tracked.tracking_lag is None else None
    return SearchOutcome(
        result, report, uri, next_space, teacher_ap, links, tracking_lag=tracked.tracking_lag
    )


def _resume_command(space_file: Path, results: Path | None) -> str:
    where = f" --results {results}" if results is not None else ""
    return f"kdtune search {space_file} --resume{where}"


def sync(
    name: str, *, results: Path | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    """``kdtune sync NAME``: bring MLflow up to date with a search's own records (after a
    tracking server was down): every trial's child run, metrics and tags, none twice."""
    from kdtune.paths import results_dir
    from kdtune.results import SEARCH_FILE, SPACE_COPY
    from kdtune.searching import sync_search
    from kdtune.space import parse_space
    from kdtune.tracking import check_tracking, resolve_tracking_uri

    root = results_dir(results)
    folder = root / name
    if not (folder / SEARCH_FILE).is_file():
        raise KdtuneError(f"sync: no search named {name!r} under {root} (no {SEARCH_FILE})")
    uri = resolve_tracking_uri(tracking_uri, root)
    check_tracking(uri)
    copy = folder / SPACE_COPY
    settings = _space_settings(parse_space(copy.read_text(), file=str(copy)))
    parent = sync_search(folder, uri, root, settings)
    return {"search": name, "tracking_uri": uri, "parent_run_id": parent}


def _confirm(
    space: Any,
    result: Any,
    root: Path,
    address: str | None,
    tracker: Any,
    progress: bool,
    say: Callable[[str], None],
    on_abandon: Callable[[SearchInterrupted], SearchInterrupted],
) -> Any:
    """The confirmation stage and its paired verdict; ``tracker`` queues each run's logging,
    ``on_abandon`` handles an interruption the stage cannot return from."""
    from kdtune.config import REFERENCE_ALPHA, alpha_to_schedule
    from kdtune.tune import confirm_plan, run_confirm
    from kdtune.verdict import verdict_of_runs

    default = alpha_to_schedule(REFERENCE_ALPHA.get(space.level, 1.0))
    points = confirm_plan(
        result, top_k=space.confirm.top_k, seeds=space.confirm.seeds, default_schedule=default
    )
    if not points:
        say("confirmation: no trial completed, so there is nothing to confirm")
        return result
    specs = list(dict.fromkeys(p["schedule"] for p in points))
    say(
        f"confirming {len(specs)} configurations ({', '.join(specs)}) with "
        f"{space.confirm.seeds} further seeds each: {len(points)} runs"
    )

    def stopped(exc: SearchInterrupted) -> SearchInterrupted:
        """The stage's records go with the search's (logged as KILLED)."""
        result.confirmations = list(exc.result) if isinstance(exc.result, list) else []
        return SearchInterrupted(exc.signum, result=result)

    try:  # each run's logging queued off Tune's loop, as the search's trials' is
        result.confirmations = run_confirm(
            space,
            points,
            results=root,
            address=address,
            on_trial_end=lambda record: tracker.log_trial(record, None),
            progress=progress,
            on_abandon=lambda exc: on_abandon(stopped(exc)),
        )
    except SearchInterrupted as exc:
        raise stopped(exc) from None
    try:
        result.verdict = verdict_of_runs(result.confirmations, default, seed=0)
    except KdtuneError as exc:
        say(f"warning: no verdict: {exc}")
    return result


def _links(uri: str, search: str) -> dict[str, Any] | None:
    """The search's MLflow UI links: on its server, or where ``kdtune ui`` serves a local store."""
    from kdtune.tracking import search_link

    return search_link(uri, search)


def guided_space(outcome: SearchOutcome) -> Path | None:
    """``--follow-guidance``: the space file of the points the guidance recommends, if any."""
    return outcome.next_space


def write_guided_space(space_file: Path, space: Any, points: list[str], out: Path) -> Path | None:
    """A grid search over ``points`` (β schedule specs) with the settings of ``space_file``;
    None where there is nothing to try (or for a chain, whose guidance is per level)."""
    if not points or space.level == "chain":
        return None
    raw = load_yaml_mapping(Path(space_file), "space")
    raw["name"] = f"{space.name}-guided"
    raw["data"] = space.data  # resolved: the new file lives elsewhere
    if isinstance(raw.get("teacher"), dict) and raw["teacher"].get("checkpoint"):
        raw["teacher"]["checkpoint"] = space.teacher.checkpoint
    raw["sampler"] = {"type": "grid", "seed": 0}
    budget = dict(raw.get("budget") or {})
    budget.pop("num_samples", None)
    raw["budget"] = budget
    raw["search"] = {"grid": [{"schedule": p} for p in points]}
    out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# The tuning guidance's next points after search {space.name!r}, as a grid.\n"
    out.write_text(header + yaml.safe_dump(raw, sort_keys=False))
    return out


def _prepare(base: TrainConfig, root: Path, say: Callable[[str], None]) -> float | None:
    """Decode the data, then settle the teacher on the driver, once, before any trial
    (:func:`kdtune.teachers.runs.prepare_for_search`: found, shipped or trained, its bank built):
    every trial then reads the same memory-mapped bank. Returns the teacher's val AP (None for a
    level without an outside teacher's maps to compare)."""
    from kdtune.data.sources import resolve_data
    from kdtune.teachers.runs import prepare_for_search
    from kdtune.train import fit

    splits = {}
    for split in ("train", base.val_split):
        limit = base.max_train_images if split == "train" else base.max_val_images
        splits[split] = resolve_data(base.data, split, base.input_size, root, limit)
    return prepare_for_search(base, splits, root, say, fit=fit)


def _space_settings(space: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    def plain(value: Any) -> Any:
        return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value

    return {
        "level": space.level,
        "data": space.data,
        "metric": space.metric,
        "mode": space.mode,
        "sampler": plain(space.sampler),
        "pruner": plain(space.pruner),
        "budget": plain(space.budget),
        "resources": plain(space.resources),
    }


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
    from kdtune.compare import compare_frame, plot_comparison, render
    from kdtune.paths import results_dir
    from kdtune.tracking import check_tracking, load_verdicts, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, results_dir(results))
    check_tracking(uri)
    frame = compare_frame(uri, searches or None, sort_by=sort_by, ascending=ascending)
    written = plot_comparison(frame, plot) if plot is not None else None
    text = render(frame, fmt)
    if fmt in ("table", "markdown"):  # CSV and JSON stay one record per run
        verdicts = load_verdicts(uri, searches or None)
        text += "".join(f"\nverdict ({name}): {v}" for name, v in verdicts.items())
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
) -> dict[str, Any]:
    """``kdtune export``: the recommended configuration of a search, checked on a held-out
    split against the seed default, paired."""
    from kdtune.export import export_best
    from kdtune.paths import results_dir

    return export_best(
        search_name,
        output,
        results=results_dir(results),
        tracking_uri=tracking_uri,
        holdout_split=holdout_split,
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
