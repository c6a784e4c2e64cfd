"""How much of a configuration's advantage on the validation images is theirs alone: the
truth table's runs (``known_answer.py run``) scored again on the held-out ``test`` split.

A search selects on the validation images and its confirmation judges on the same ones
(docs/statistics.md, "The confirmation's images"). The same trained models scored on 512
images they were never selected on say how far the validation split's paired differences
carry: per configuration, its difference to α 1 on ``val`` (the table) and on ``test`` (the
same models, the same seeds), and the gap between the two. Seed noise cancels in the gap (the
same models on both splits); what stays is configuration-by-image (and seed-by-image) noise,
the part a selection on ``val`` can be lucky with::

    python benchmarks/image_bias.py --truth benchmarks/known_answer/synthetic.json \\
        --results /tmp/ka/results
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from figures import save
from known_answer import BASELINE, shaping, t_interval

HERE = Path(__file__).resolve().parent
SHARED_KEYS = ("data_fingerprint", "val_images", "teacher_digest", "code_digest")


def find_runs(truth: dict[str, Any], runs_root: Path) -> dict[tuple[str, int], Path]:
    """(schedule, seed) → the run folder of each of the truth table's runs, found by its
    ``key.json`` (the same budget, data, teacher and code as the table's)."""
    want = shaping(truth["config"])
    found: dict[tuple[str, int], Path] = {}
    for key_file in runs_root.glob("*/key.json"):
        key = json.loads(key_file.read_text())
        same = all(key.get(k) == truth["shared"].get(k) for k in SHARED_KEYS)
        if same and shaping(key["config"]) == want and (key_file.parent / "model.pt").is_file():
            found[(key["config"]["schedule"], int(key["config"]["seed"]))] = key_file.parent
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truth", type=Path, default=HERE / "known_answer" / "synthetic.json")
    parser.add_argument("--results", type=Path, default=Path("results/bench"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from kdtune.checkpoint_ap import evaluate_checkpoint

    truth = json.loads(args.truth.read_text())
    runs = find_runs(truth, args.results / "known_answer_runs")
    val = {(r["schedule"], int(s)): ap for r in truth["table"] for s, ap in r["aps"].items()}
    missing = sorted(set(val) - set(runs))
    if missing:
        raise SystemExit(
            f"image_bias: {len(missing)} runs of the table not found, e.g. {missing[0]}"
        )
    held: dict[tuple[str, int], float] = {}
    for (spec, seed), folder in sorted(runs.items()):
        if (spec, seed) in val:
            got = evaluate_checkpoint(
                folder / "model.pt", "tiny", truth["config"]["data"], args.split,
                results=args.results,
            )  # fmt: skip
            held[(spec, seed)] = float(got[f"{args.split}/ap"])
    seeds = sorted({s for _, s in val})
    rows = []
    for row in truth["table"]:
        spec = row["schedule"]
        d_val = [val[(spec, s)] - val[(BASELINE, s)] for s in seeds]
        d_held = [held[(spec, s)] - held[(BASELINE, s)] for s in seeds]
        gap = [a - b for a, b in zip(d_val, d_held, strict=True)]
        rows.append({
            "schedule": spec, "words": row["words"],
            "val_mean": statistics.mean(val[(spec, s)] for s in seeds),
            "held_mean": statistics.mean(held[(spec, s)] for s in seeds),
            "diff_val": statistics.mean(d_val), "diff_held": statistics.mean(d_held),
            "gap": statistics.mean(gap) if spec != BASELINE else 0.0,
            "gap_interval": t_interval(gap) if spec != BASELINE else (0.0, 0.0),
        })  # fmt: skip
    best_val = max(rows, key=lambda r: r["val_mean"])
    best_held = max(rows, key=lambda r: r["held_mean"])
    record = {
        "truth": str(args.truth),
        "split": args.split,
        "seeds": seeds,
        "rows": rows,
        "best_on_val": best_val["schedule"],
        "best_on_held": best_held["schedule"],
        "held_aps": {f"{k[0]}@{k[1]}": v for k, v in sorted(held.items())},
    }
    print(
        f"{len(held)} models scored on {args.split}; paired differences to α 1, {len(seeds)} seeds"
    )
    head = f"{'configuration':26s} {'val':>7s} {args.split:>7s}  {'Δ val':>8s}"
    print(f"{head} {'Δ ' + args.split:>8s}  gap (val − {args.split}) [95 %]")
    for r in rows:
        low, high = r["gap_interval"]
        print(f"{r['words']:26s} {r['val_mean']:.4f} {r['held_mean']:.4f}  {r['diff_val']:+.4f} "
              f"{r['diff_held']:+.4f}  {r['gap']:+.4f} [{low:+.4f}, {high:+.4f}]")  # fmt: skip
    print(f"best on val: {best_val['words']}; best on {args.split}: {best_held['words']}")
    out = args.out or HERE / "known_answer" / f"{Path(args.truth).stem}-{args.split}.json"
    save(record, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
