"""A known answer to check kdtune's recommendations against.

``run``: the truth table. Trains the quickstart's runs (its space file's ``train`` block and
budget: the second level, tiny from the shipped med teacher, 1024 training images, 12 epochs,
batch 16, bank targets) at α 1, 0.5, 0.25, 0.1, 0, β 0.9 → 0.5 and β 0.5 → 0.9 (linear), with
``--seeds`` training seeds each (16 by default), and stores each configuration's final val AP
per seed, its mean and sd, and its paired difference to α = 1 (same seeds) with a 95 %
t-interval over seeds, with the command, the commit and everything that shaped the runs::

    python benchmarks/known_answer.py run --data synthetic
    python benchmarks/known_answer.py run --data synthetic-cocolike
    python benchmarks/known_answer.py run --quick        # a slice: 2 configurations × 2 seeds
    python benchmarks/known_answer.py run --population   # each seed's runs as one population

With ``--population`` each seed's configurations train as one population
(:mod:`kdtune.population_fit`): they share the seed, hence the init and the batches each would
get alone, and train within float rounding of those separate runs (``tests/test_population_fit.py``
states the tolerance); the run folders and their reuse are the same either way.

A finished run is reused only when everything that shapes it matches (``reuse.py``: config,
data and its settings, validation images, teacher weights, kdtune's source, device, threads).
Anything short of the full table (fewer configurations or seeds, another budget) is written as
a *slice* (``"kind": "slice"``, a ``-slice`` file name), never as the truth table.

``judge``: reads a finished search's ``search.json`` and checks it against a truth table: the
regret (the truth of the table's best configuration minus the truth of the recommended one) and
each claim of its verdict (each comparison's sign) against the truth's paired difference::

    python benchmarks/known_answer.py judge results/quickstart \
        --truth benchmarks/known_answer/synthetic.json --json judged/quickstart.json

``judge --rejudge`` first derives the verdict again from the search's stored runs under
today's rule (``kdtune rejudge``: the race replayed round by round, nothing trained), so a
change of the rule is judged on races already run.

``agree``: judged quickstarts together, as issue 20 asks of them: their median regret (≤ 0.003
AP), every claim the truth contradicts, and whether their recommendations agree (equal or, pair
by pair, declared equivalent by one of the two verdicts)::

    python benchmarks/known_answer.py agree judged/a.json judged/b.json judged/c.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from figures import save
from reuse import git_commit, run_folder, shared_parts, train_or_reuse

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TABLE: tuple[str, ...] = (
    "fixed:0",  # α 1: ground truth only, the baseline of every paired difference
    "fixed:0.5",
    "fixed:0.75",
    "fixed:0.9",
    "fixed:1",
    "linear:0.9:0.5",
    "linear:0.5:0.9",  # β rising
)
BASELINE = "fixed:0"
FULL_SEEDS = 16
QUICK = {"configs": ("fixed:0", "linear:0.5:0.9"), "seeds": 2, "train_images": 128,
         "epochs": 2, "val_images": 64}  # fmt: skip
# keys of a trial's config that do not shape what it measures (where and how it runs)
# how often a run is evaluated does not change what it learns (tests/test_train.py)
NOT_SHAPING = ("schedule", "seed", "extra", "num_threads", "device", "teacher_bank", "eval_every")


# ----------------------------------------------------------------------------- statistics


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean of ``values`` (nan, nan with fewer than two)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean, sd = statistics.mean(values), statistics.stdev(values)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def summarise(aps: dict[str, dict[int, float]]) -> list[dict[str, Any]]:
    """Per configuration: AP per seed, mean, sd, and the paired difference to α = 1."""
    from kdtune.schedules import words

    base = aps.get(BASELINE, {})
    rows = []
    for spec, by_seed in aps.items():
        seeds = sorted(by_seed)
        values = [by_seed[s] for s in seeds]
        row: dict[str, Any] = {
            "schedule": spec,
            "words": words(spec),
            "aps": {str(s): by_seed[s] for s in seeds},
            "mean": statistics.mean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else math.nan,
            "n": len(values),
        }
        paired = [s for s in seeds if s in base]
        if spec != BASELINE and paired:
            diffs = [by_seed[s] - base[s] for s in paired]
            low, high = t_interval(diffs)
            row["diff_vs_alpha1"] = {
                "mean": statistics.mean(diffs),
                "sd": statistics.stdev(diffs) if len(diffs) > 1 else math.nan,
                "low": low,
                "high": high,
                "n": len(diffs),
                "confidence": 0.95,
            }
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- run


def _one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(job["threads"])
    start = time.perf_counter()
    summary, reused = train_or_reuse(job["config"], Path(job["folder"]), Path(job["results"]))
    trained = {}
    if job["config"].get("ema_decay"):  # the same run without its average: paired exactly
        ap = _trained_ap(job["config"], Path(job["folder"]), summary, Path(job["results"]))
        trained = {"val/ap_trained": ap}
    return {
        "schedule": job["config"]["schedule"],
        "seed": job["config"]["seed"],
        "val/ap": summary["final"]["val/ap"],
        **trained,
        "wall_s": summary["wall_s"],  # the run's own training time, also when reused
        "reused": reused,
        "elapsed_s": time.perf_counter() - start,
        "folder": job["folder"],
    }


def _trained_ap(
    config: dict[str, Any], folder: Path, summary: dict[str, Any], results: Path
) -> float:
    """The val AP of a run's trained weights (``trained`` in its model.pt) where the run
    evaluated their moving average: what the run would have scored without ``ema_decay``, on
    the same validation images. Kept in ``trained_ap.json`` beside the run."""
    import torch

    from kdtune.config import TrainConfig
    from kdtune.data.sources import resolve_data
    from kdtune.models import build_model
    from kdtune.predict import evaluate_model

    kept = folder / "trained_ap.json"
    if kept.is_file():
        return float(json.loads(kept.read_text())["val/ap"])
    cfg = TrainConfig.from_dict(config)
    state = torch.load(summary["model"], map_location="cpu", weights_only=True)
    model = build_model(state["arch"])
    model.load_state_dict(state["trained"])
    val = resolve_data(cfg.data, cfg.val_split, cfg.input_size, results, cfg.max_val_images)
    ap = float(evaluate_model(model.eval(), val, cfg, torch.device("cpu"))["val/ap"])
    kept.write_text(json.dumps({"val/ap": ap}))
    return ap


def _population(job: dict[str, Any]) -> list[dict[str, Any]]:
    """One seed's configurations as one population (``--population``): the members share the
    seed, so each trains on the batches and from the init it would get alone; members finished
    before are reused, the others trained together."""
    import torch

    from kdtune.config import TrainConfig
    from kdtune.population_fit import fit_population

    torch.set_num_threads(job["threads"])
    start = time.perf_counter()
    folders = [Path(f) for f in job["folders"]]
    todo = [m for m, f in enumerate(folders) if not (f / "summary.json").is_file()]
    if todo:
        fit_population(
            [TrainConfig.from_dict(job["configs"][m]) for m in todo],
            workdirs=[folders[m] for m in todo],
            results=Path(job["results"]),
        )
    runs = []
    for m, (config, folder) in enumerate(zip(job["configs"], folders, strict=True)):
        summary = json.loads((folder / "summary.json").read_text())
        runs.append({
            "schedule": config["schedule"],
            "seed": config["seed"],
            "val/ap": summary["final"]["val/ap"],
            "wall_s": summary["wall_s"],  # the population's training time, also when reused
            "reused": m not in todo,
            "population": summary.get("population", {}).get("size", 1),
            "elapsed_s": time.perf_counter() - start,
            "folder": str(folder),
        })  # fmt: skip
    return runs


def base_config(args: argparse.Namespace) -> dict[str, Any]:
    """The trial config of the space file, with the command's overrides."""
    from kdtune.space import load_space

    space = load_space(args.space)
    overrides: dict[str, Any] = {"data": args.data} if args.data else {}
    for key, arg in (("epochs", "epochs"), ("max_train_images", "train_images"),
                     ("eval_every", "eval_every"), ("batch_size", "batch_size")):  # fmt: skip
        if getattr(args, arg) is not None:
            overrides[key] = getattr(args, arg)
    if args.val_images is not None:
        overrides["max_val_images"] = args.val_images or None
    if getattr(args, "ema_decay", None) is not None:
        overrides["ema_decay"] = args.ema_decay
    if "epochs" in overrides and "eval_every" not in overrides:
        overrides["eval_every"] = min(space.budget.eval_every, overrides["epochs"])
    return space.trial_config(overrides)


def shaping(config: dict[str, Any]) -> dict[str, Any]:
    """A run config without the keys that do not shape what it measures (NOT_SHAPING)."""
    return {k: v for k, v in config.items() if k not in NOT_SHAPING}


def _file_name(data: str, kind: str) -> str:
    stem = Path(data).name if os.sep in data else data
    stem = re.sub(r"[^A-Za-z0-9._=-]+", "_", stem)
    return f"{stem}{'-slice' if kind == 'slice' else ''}.json"


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    configs = tuple(args.configs or TABLE)
    seeds = args.seeds if args.seeds is not None else FULL_SEEDS
    if BASELINE not in configs:
        configs = (BASELINE, *configs)  # every difference is paired with α = 1
    results = args.results.resolve()
    base = base_config(args)
    budget_args = ("epochs", "train_images", "val_images", "eval_every", "batch_size", "ema_decay")
    quickstart = base_config(argparse.Namespace(**{**vars(args), **dict.fromkeys(budget_args)}))
    same_budget = shaping(base) == shaping(quickstart)  # evaluating less often is allowed
    full = set(TABLE) <= set(configs) and seeds >= FULL_SEEDS and same_budget
    kind = "truth table" if full else "slice"
    threads = max(1, (os.cpu_count() or 1) // args.workers)

    from kdtune.config import TrainConfig
    from kdtune.search.prepare import teacher_and_bank

    # the data, the teacher and its bank once, before the workers start, so that no two build it
    teacher_and_bank(TrainConfig.from_dict(base), results, print)
    shared = shared_parts(base, results, threads)
    commit = git_commit()  # the code the runs are trained with (its digest is in `shared`)
    jobs = []
    for seed in range(seeds):
        for spec in configs:
            config = {**base, "schedule": spec, "seed": seed}
            folder = run_folder(results / "known_answer_runs", config, shared)
            jobs.append({"config": config, "folder": str(folder), "results": str(results),
                         "threads": threads})  # fmt: skip
    start = time.perf_counter()
    # spawned, not forked: a fork of a process whose torch already ran threads can hang
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        if args.population:  # one population per seed: all its configurations at once
            groups = [jobs[i : i + len(configs)] for i in range(0, len(jobs), len(configs))]
            merged = [{"configs": [j["config"] for j in g], "folders": [j["folder"] for j in g],
                       "results": str(results), "threads": threads} for g in groups]  # fmt: skip
            runs = [r for rs in pool.map(_population, merged) for r in rs]
        else:
            runs = list(pool.map(_one, jobs))
    wall = time.perf_counter() - start
    aps: dict[str, dict[int, float]] = {spec: {} for spec in configs}
    trained_aps: dict[str, dict[int, float]] = {spec: {} for spec in configs}
    for r in runs:
        aps[r["schedule"]][r["seed"]] = r["val/ap"]
        if "val/ap_trained" in r:
            trained_aps[r["schedule"]][r["seed"]] = r["val/ap_trained"]
    trained = [r["wall_s"] for r in runs if not r["reused"]]
    record = {
        "kind": kind,
        "note": (
            "the truth table: every configuration, 16+ seeds, the quickstart's budget"
            if full
            else "a SLICE (fewer configurations, seeds or another budget): not the truth table"
        ),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "commit": commit,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.workers} workers "
        f"× {threads} torch threads",
        "space": str(args.space),
        "config": {k: v for k, v in base.items() if k not in ("schedule", "seed")},
        "shared": shared,
        "seeds": list(range(seeds)),
        "table": summarise(aps),
        **({"table_without_ema": summarise(trained_aps)} if any(trained_aps.values()) else {}),
        "runs": runs,
        "timing": {
            "runs": len(runs),
            "trained": len(trained),
            "trained_as": "one population per seed" if args.population else "separate runs",
            "wall_s": wall,
            "mean_run_wall_s": statistics.mean(trained) if trained else None,
        },
    }
    out = args.out or HERE / "known_answer" / _file_name(base["data"], kind)
    save(record, out)
    _print_table(record)
    print(f"wrote {out}")
    return record


def _print_table(record: dict[str, Any]) -> None:
    print(f"\n{record['kind'].upper()}: {record['config']['data']}, "
          f"{record['config']['max_train_images']} images × {record['config']['epochs']} epochs, "
          f"{len(record['seeds'])} seeds, {record['shared']['val_images']} val images")  # fmt: skip
    for row in record["table"]:
        diff = row.get("diff_vs_alpha1")
        versus = (
            f"   vs α 1: {diff['mean']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}]"
            if diff
            else ""
        )
        print(f"{row['words']:30s} {row['mean']:.4f} ± {row['sd']:.4f}{versus}")
    t = record["timing"]
    if t["mean_run_wall_s"] is not None:
        print(f"{t['trained']} runs trained, {t['mean_run_wall_s']:.0f} s each on average; "
              f"{t['wall_s']:.0f} s in all")  # fmt: skip


# ----------------------------------------------------------------------------- judge


def _claim(comparison: dict[str, Any]) -> str:
    """What a verdict's comparison claims of ``subject − against``: the block's ``outcome``
    (beats, trails, equivalent, or undecided: no claim, held at the block's family-wise level),
    or, in an older ``search.json``, what its interval alone said."""
    outcome = comparison.get("outcome")
    if isinstance(outcome, str):
        return outcome
    named = comparison.get("claim")
    if isinstance(named, str):
        return named
    if comparison.get("equivalent"):
        return "equivalent"
    low, high = float(comparison["low"]), float(comparison["high"])
    return "beats" if low > 0 else "trails" if high < 0 else "indistinguishable"


def check_claim(claim: str, truth: dict[str, float], margin: float | None = None) -> str:
    """``holds``, ``contradicted`` or ``truth cannot tell``: a claim about ``recommended −
    against`` checked against the truth's paired difference (its t-interval)."""
    low, high = truth["low"], truth["high"]
    if claim == "beats":
        return "holds" if low > 0 else "contradicted" if high < 0 else "truth cannot tell"
    if claim == "trails":
        return "holds" if high < 0 else "contradicted" if low > 0 else "truth cannot tell"
    if claim == "equivalent" and margin is not None:
        if -margin <= low and high <= margin:
            return "holds"
        return "contradicted" if low > margin or high < -margin else "truth cannot tell"
    if claim in ("undecided", "no claim"):
        return "no claim to check"
    # indistinguishable (a statement about the evidence): the truth contradicts it only where
    # it tells the two apart
    return "holds" if low <= 0 <= high else "contradicted"


def _paired(truth: dict[str, Any], a: str, b: str) -> dict[str, float] | None:
    rows = {r["schedule"]: r for r in truth["table"]}
    if a not in rows or b not in rows:
        return None
    seeds = sorted(set(rows[a]["aps"]) & set(rows[b]["aps"]), key=int)
    diffs = [rows[a]["aps"][s] - rows[b]["aps"][s] for s in seeds]
    if not diffs:
        return None
    low, high = t_interval(diffs)
    return {"mean": statistics.mean(diffs), "low": low, "high": high, "n": len(diffs)}


def judge(
    search: Path,
    truth_path: Path,
    allow_mismatch: bool = False,
    rejudge: bool = False,
    space: Path | None = None,
) -> dict[str, Any]:
    """A finished search checked against a truth table: its regret and every claim of its
    verdict. ``rejudge``: the verdict is first derived again from the search's stored runs
    under today's rule (``kdtune rejudge``; ``space``, its space file where the stored path
    does not hold), so a rule change is judged without training anything."""
    from kdtune.errors import KdtuneError
    from kdtune.results import SEARCH_FILE, SearchResult
    from kdtune.schedules import words

    file = search / SEARCH_FILE if search.is_dir() else search
    if not file.is_file():
        raise KdtuneError(f"judge: no {SEARCH_FILE} at {search}")
    if not truth_path.is_file():
        raise KdtuneError(f"judge: no truth table at {truth_path}")
    result = SearchResult.load(file)
    rejudged = None
    if rejudge:
        from kdtune.api import rejudge as rejudge_search

        again = rejudge_search(file.parent.name, results=file.parent.parent, space_file=space)
        result.verdict = again["verdict"]
        rejudged = {k: v for k, v in again.items() if k not in ("verdict", "text")}
    truth = json.loads(truth_path.read_text())
    trials = [t for t in [*result.trials, *result.confirmations] if t.config]
    if not trials:
        raise KdtuneError(f"judge: {file} holds no trial")
    searched, known = shaping(trials[0].config), shaping(truth["config"])
    mismatch = sorted(k for k in searched.keys() | known.keys() if searched.get(k) != known.get(k))
    if mismatch and not allow_mismatch:
        detail = ", ".join(f"{k} {searched.get(k)!r} vs {known.get(k)!r}" for k in mismatch[:4])
        raise KdtuneError(
            f"judge: the search ran another budget than the truth table ({detail}); "
            "--allow-mismatch to judge anyway"
        )
    means = {r["schedule"]: r["mean"] for r in truth["table"]}
    best = max(means, key=means.__getitem__)
    recommended = result.recommended
    report: dict[str, Any] = {
        "search": str(file),
        "truth": str(truth_path),
        "truth_kind": truth.get("kind"),
        "budget_mismatch": mismatch,
        "rejudged": rejudged,
        "recommended": recommended,
        "withheld": result.withheld,
        "truth_best": best,
        "truth_best_mean": means[best],
        "regret": None,
        "claims": [],
    }
    if recommended is not None and recommended in means:
        report["truth_recommended_mean"] = means[recommended]
        report["regret"] = means[best] - means[recommended]
    elif recommended is not None:
        report["why_no_regret"] = (
            f"{words(recommended)} is not in the truth table: add it with run --configs"
        )
    verdict = result.verdict or {}
    report["candidates_by"] = verdict.get("candidates_by")
    picked = verdict.get("picked")
    if picked:
        # the race's own leader by mean: what `confirm.pick: mean` would have recommended from
        # the same runs, so the two rules are compared on one race
        leader = str(picked["leader_by_mean"])
        report["picked_by"] = picked.get("by")
        report["leader_by_mean"] = leader
        report["regret_leader_by_mean"] = means[best] - means[leader] if leader in means else None
    for comp in verdict.get("comparisons", []):
        claim = _claim(comp)
        subject = str(comp.get("subject") or verdict["recommended"])
        truth_diff = _paired(truth, subject, str(comp["against"]))
        entry = {
            "subject": subject,
            "against": comp["against"],
            "sentence": comp.get("sentence"),
            "claim": claim,
            "by": comp.get("by"),
            "search": {k: comp.get(k) for k in ("mean", "low", "high")},
            "truth": truth_diff,
            "check": (
                "no truth for it"
                if truth_diff is None
                else check_claim(claim, truth_diff, comp.get("margin", verdict.get("margin")))
            ),
        }
        report["claims"].append(entry)
    return report


def _print_judgement(report: dict[str, Any]) -> None:
    from kdtune.schedules import words

    print(f"judged {report['search']} against {report['truth']} ({report['truth_kind']})")
    if report["budget_mismatch"]:
        print(f"  budget differs in: {', '.join(report['budget_mismatch'])}")
    again = report.get("rejudged")
    if again:
        print(
            f"  verdict derived again under today's rule: {again['rounds_replayed']} of "
            f"{again['rounds_stored']} stored rounds ({again['stopped']}); stored "
            f"recommendation {words(again['stored_recommended'] or '')}"
        )
    rec = report["recommended"]
    print(f"  recommended: {words(rec) if rec else 'nothing (' + str(report['withheld']) + ')'}")
    print(f"  truth's best: {words(report['truth_best'])} ({report['truth_best_mean']:.4f})")
    if report["regret"] is not None:
        print(f"  regret: {report['regret']:.4f} AP")
    else:
        print(f"  regret: unknown ({report.get('why_no_regret', 'nothing recommended')})")
    if report.get("picked_by"):
        lead, lead_regret = report["leader_by_mean"], report["regret_leader_by_mean"]
        print(
            f"  picked by the {report['picked_by']}; the race's leader by mean: {words(lead)}"
            + (f" (regret {lead_regret:.4f})" if lead_regret is not None else "")
        )
    for c in report["claims"]:
        truth = c["truth"]
        known = (
            f" (truth {truth['mean']:+.4f} [{truth['low']:+.4f}, {truth['high']:+.4f}])"
            if truth
            else ""
        )
        by = " by the pooled model" if c.get("by") == "pooled model" else ""
        print(
            f"  {words(c.get('subject') or rec)} vs {words(c['against'])}: {c['claim']}{by}"
            f" → {c['check']}{known}"
        )


# ----------------------------------------------------------------------------- agree

TARGET_REGRET = 0.003  # AP: the median regret of judged quickstarts issue 20 asks for


def agree(picks: list[tuple[str, dict[str, str]]]) -> bool:
    """Whether quickstarts' recommendations are equal or, pair by pair, declared equivalent by
    one of the two verdicts. ``picks``: each quickstart's recommendation and what its verdict
    claims of it against each other configuration (``{against: claim}``)."""
    for i, (a, said_a) in enumerate(picks):
        for b, said_b in picks[i + 1 :]:
            if a != b and "equivalent" not in (said_a.get(b), said_b.get(a)):
                return False
    return True


def together(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Judged quickstarts (``judge``'s reports) taken together, as issue 20 asks of them: the
    median regret, every claim the truth contradicts, and whether the recommendations agree."""
    from kdtune.errors import KdtuneError

    if len(reports) < 2:
        raise KdtuneError("agree: give at least 2 judged reports")
    picks: list[tuple[str, dict[str, str]]] = []
    for r in reports:
        if r.get("recommended") is None:
            raise KdtuneError(f"agree: {r.get('search')} recommended nothing")
        said = {
            str(c["against"]): str(c["claim"])
            for c in r["claims"]
            if c.get("subject") in (None, r["recommended"])
        }
        picks.append((str(r["recommended"]), said))
    regrets = [r["regret"] for r in reports]
    known = [x for x in regrets if x is not None]
    median = statistics.median(known) if len(known) == len(regrets) else None
    contradicted = [
        {"search": r["search"], "sentence": c["sentence"]}
        for r in reports
        for c in r["claims"]
        if c["check"] == "contradicted"
    ]
    return {
        "searches": [r["search"] for r in reports],
        "recommended": [p for p, _ in picks],
        "regrets": regrets,
        "median_regret": median,
        "median_regret_within_target": median is not None and median <= TARGET_REGRET,
        "claims": sum(len(r["claims"]) for r in reports),
        "decided_claims": sum(
            c["claim"] not in ("undecided", "no claim") for r in reports for c in r["claims"]
        ),
        "contradicted": contradicted,
        "agree": agree(picks),
    }


def _print_together(t: dict[str, Any]) -> None:
    from kdtune.schedules import words

    for search, rec, regret in zip(t["searches"], t["recommended"], t["regrets"], strict=True):
        shown = "unknown" if regret is None else f"{regret:.4f}"
        print(f"{search}: {words(rec)}, regret {shown}")
    median = "unknown" if t["median_regret"] is None else f"{t['median_regret']:.4f}"
    yes = {True: "yes", False: "no"}
    print(f"median regret {median} AP (≤ {TARGET_REGRET}: {yes[t['median_regret_within_target']]})")
    print(f"claims contradicted by the truth: {len(t['contradicted'])} "
          f"(of {t['decided_claims']} decided, {t['claims']} in all)")  # fmt: skip
    for c in t["contradicted"]:
        print(f"  {c['search']}: {c['sentence']}")
    print(f"recommendations equal or declared equivalent: {yes[t['agree']]}")


# ----------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run", help="train the table's runs (reused where nothing changed)")
    r.add_argument("--data", default=None, help="a data source or COCO root (default: the space's)")
    r.add_argument("--space", type=Path, default=ROOT / "search_spaces" / "quickstart.yaml")
    r.add_argument(
        "--configs",
        type=lambda s: s.split(","),
        default=None,
        help="comma-separated β schedule specs (default: the table's seven)",
    )
    r.add_argument("--seeds", type=int, default=None, help=f"default {FULL_SEEDS}")
    r.add_argument("--epochs", type=int, default=None)
    r.add_argument("--train-images", type=int, default=None)
    r.add_argument("--val-images", type=int, default=None, help="0: the whole split")
    r.add_argument("--eval-every", type=int, default=None)
    r.add_argument("--batch-size", type=int, default=None)
    r.add_argument(
        "--ema-decay",
        type=float,
        default=None,
        help="evaluate a moving average of the weights (train.ema_decay; default: the space's)",
    )
    r.add_argument(
        "--quick",
        action="store_true",
        help="a slice: 2 configurations × 2 seeds, 128 images × 2 epochs, 64 val",
    )
    r.add_argument("--workers", type=int, default=2)
    r.add_argument(
        "--population",
        action="store_true",
        help="train each seed's configurations as one population (one process, the same "
        "batches, one data pipeline; kdtune.population_fit) instead of separate runs",
    )
    r.add_argument("--results", type=Path, default=Path("results/bench"))
    r.add_argument("--out", "--json", dest="out", type=Path, default=None)
    j = sub.add_parser("judge", help="check a finished search against a truth table")
    j.add_argument("search", type=Path, help="a search folder (or its search.json)")
    j.add_argument("--truth", type=Path, required=True)
    j.add_argument("--allow-mismatch", action="store_true")
    j.add_argument(
        "--rejudge",
        action="store_true",
        help="derive the verdict again from the stored runs under today's rule first",
    )
    j.add_argument("--space", type=Path, default=None, help="with --rejudge: the space file")
    j.add_argument("--json", type=Path, default=None)
    a = sub.add_parser(
        "agree", help="judged quickstarts together: median regret, contradicted claims, agreement"
    )
    a.add_argument("reports", type=Path, nargs="+", help="judge's --json reports")
    a.add_argument("--json", type=Path, default=None)
    return p


def main(argv: list[str] | None = None) -> None:
    from kdtune.errors import KdtuneError

    args = parser().parse_args(argv)
    try:
        if args.mode == "run":
            run(args)
        elif args.mode == "agree":
            reports = []
            for path in args.reports:
                if not path.is_file():
                    raise KdtuneError(f"agree: no judged report at {path}")
                try:
                    reports.append(json.loads(path.read_text()))
                except json.JSONDecodeError as exc:
                    raise KdtuneError(f"agree: {path} is not JSON ({exc.msg})") from None
            t = together(reports)
            _print_together(t)
            save(t, args.json)
        else:
            report = judge(args.search, args.truth, args.allow_mismatch, args.rejudge, args.space)
            _print_judgement(report)
            save(report, args.json)
    except KdtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
