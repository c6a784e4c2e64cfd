"""Do repeated quickstarts agree? And does the verdict have power?

Runs the quickstart search ``--runs`` times, each with its own sampler seed and training seed
(run i: ``sampler.seed = i``, ``train.seed = 10 i``), and reports each run's recommendation,
its confirmation ranking and its paired verdicts. Two runs *confidently contradict* when each
says its recommendation beats its runner-up (the interval excludes 0) and the two
recommendations differ: fixed ratios by more than 0.1 in α, schedules by shape or by more
than 0.1 in β start or end. The goal is that this never happens.

``--power`` adds a run that must find a difference: the quickstart's budget on a grid of
α = 1 (ground truth only) and α = 0 (teacher only), with an *untrained* med net as the
teacher. The verdict must say that α = 1 beats α = 0 with an interval that excludes 0.

Usage (2-core CPU: about 8 minutes per quickstart):

    python benchmarks/agreement.py --runs 3 --power --out results/bench/agreement
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml

from kdtune import api
from kdtune.schedules import parse_schedule

QUICKSTART = Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml"


def same_answer(a: str, b: str, tolerance: float = 0.1) -> bool:
    """Whether two recommended schedules name the same ratio, within ``tolerance``."""
    sa, sb = parse_schedule(a), parse_schedule(b)
    if sa.shape != sb.shape:
        return False
    return (
        abs(sa.beta_start - sb.beta_start) <= tolerance
        and abs(sa.beta_end - sb.beta_end) <= tolerance
    )


def confident(verdict: dict[str, Any] | None) -> bool:
    """Whether a run claims its recommendation beats its runner-up (interval above 0)."""
    if not verdict:
        return False
    return any(c["role"] == "runner-up" and c["low"] > 0 for c in verdict["comparisons"])


def run_search(space: dict[str, Any], folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    space_file = folder / f"{space['name']}.yaml"
    space_file.write_text(yaml.safe_dump(space, sort_keys=False))
    started = time.perf_counter()
    outcome = api.search(space_file, results=folder / "results", progress=False, log=print)
    wall = time.perf_counter() - started
    result = outcome.result
    best = result.best
    return {
        "name": space["name"],
        "sampler_seed": space["sampler"]["seed"],
        "train_seed": space["train"].get("seed", 0),
        "wall_s": round(wall, 1),
        "search_best": best.reported_schedule if best else None,
        "search_best_ap": best.value() if best else None,
        "recommended": result.recommended,
        "verdict": result.verdict,
        "counts": result.counts(),
        "teacher_ap": outcome.teacher_ap,
    }


def untrained_teacher(path: Path) -> Path:
    import torch

    from kdtune.models import build_model

    torch.manual_seed(0)
    torch.save({"arch": "med", "model": build_model("med").state_dict()}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--power", action="store_true", help="add the untrained-teacher run")
    parser.add_argument("--out", type=Path, default=Path("results/bench/agreement"))
    args = parser.parse_args()
    base = yaml.safe_load(QUICKSTART.read_text())
    rows = []
    for i in range(args.runs):
        space = json.loads(json.dumps(base))
        space["name"] = f"agree{i}"
        space["sampler"]["seed"] = i
        space["train"]["seed"] = 10 * i
        rows.append(run_search(space, args.out / space["name"]))
        print(json.dumps(rows[-1]["verdict"] and rows[-1]["verdict"]["sentence"]))
    contradictions = [
        (a["name"], b["name"])
        for k, a in enumerate(rows)
        for b in rows[k + 1 :]
        if confident(a["verdict"])
        and confident(b["verdict"])
        and not same_answer(a["recommended"], b["recommended"])
    ]
    power = None
    if args.power:
        space = json.loads(json.dumps(base))
        space.update(name="power", warm_start=False)
        space["sampler"] = {"type": "grid", "seed": 0}
        space["pruner"] = {"type": "none"}
        space["search"] = {"grid": [{"alpha": 1.0}, {"alpha": 0.0}]}
        folder = args.out / "power"
        folder.mkdir(parents=True, exist_ok=True)
        space["teacher"] = {"checkpoint": str(untrained_teacher(folder / "untrained_med.pt"))}
        power = run_search(space, folder)
    summary = {"runs": rows, "contradictions": contradictions, "power": power}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "agreement.json").write_text(json.dumps(summary, indent=2, default=str))
    print("\nrun  sampler/train seed  recommended  verdict")
    for r in rows:
        sentence = r["verdict"]["sentence"] if r["verdict"] else "(no verdict)"
        print(f"{r['name']}  {r['sampler_seed']}/{r['train_seed']}  {r['recommended']}  {sentence}")
    print(f"confident contradictions: {contradictions or 'none'}")
    if power is not None and power["verdict"]:
        for c in power["verdict"]["comparisons"]:
            print(f"power: {c['sentence']}")


if __name__ == "__main__":
    main()
