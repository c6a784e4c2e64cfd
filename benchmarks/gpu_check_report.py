"""Gather the steps of ``benchmarks/gpu_check.sh`` into its one JSON.

Reads the script's scratch folder: ``steps/NAME.status`` (exit code and milliseconds),
``steps/NAME.log`` (its output: the tail becomes the step's error where it failed),
``steps/NAME.json`` (a benchmark's figures), and nvidia-smi's samples taken during the searches
(``gpu_samples.csv``: the device's memory in MiB; ``proc_samples.csv``: each process's). Sets the
headline figures beside the goals of issue 11 (on an H100-class GPU, bf16).

    python benchmarks/gpu_check_report.py --work /tmp/gpu_check.XXXX --json OUT/gpu_check.json
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path
from typing import Any

STEPS = (
    "env",
    "gpu_tests",
    "population",
    "search_full",
    "search_figures",
    "search_pop",
    "search_pop_figures",
    "trial_second",
    "trial_first",
    "search_one",
    "search_four",
    "throughput",
    "trial_compiled",
    "rehearsal",
)
# the goals the figures are set against (issue 11), not measurements
GOALS = {
    "second_level_images_per_s": 40_000.0,
    "second_level_share_of_model_only": 0.80,
    "first_level_bank_images_per_s": 17_000.0,
    "first_level_bank_over_live": 5.0,
    "four_trials_over_one": 2.5,
    # issue 21
    "population_over_separate": 1.5,
    "population_share_of_model_only": 0.85,
    "search_summed_images_per_s": 2 * 17_700.0,
    "search_and_confirm_gpu_busy_pct": 85.0,
    "search_gpu_busy_pct": 85.0,
    "confirm_gpu_busy_pct": 85.0,
    "pop_search_summed_images_per_s": 2 * 17_700.0,
    "pop_search_and_confirm_gpu_busy_pct": 85.0,
    "pop_search_gpu_busy_pct": 85.0,
    "pop_confirm_gpu_busy_pct": 85.0,
}


def step_record(steps: Path, name: str) -> dict[str, Any]:
    """One step: ``ok``, exit code, seconds, its figures, and its error where it failed."""
    status = steps / f"{name}.status"
    if not status.is_file():
        return {"ok": False, "error": "did not run (the script stopped before it)"}
    rc_text, ms_text = [*status.read_text().split(), "0"][:2]
    rc = int(rc_text)
    # a step not asked for (GPU_CHECK_STEPS) did not fail: it says so and counts as ok
    record: dict[str, Any] = {"ok": rc in (0, -2), "exit_code": rc, "seconds": int(ms_text) / 1000}
    if rc == -2:
        record["skipped"] = "not asked for (GPU_CHECK_STEPS)"
    log = steps / f"{name}.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    if rc not in (0, -2):
        tail = [line for line in text.splitlines() if line.strip()][-15:]
        reason = {
            124: "timed out",
            137: "killed after timing out",
            -1: "skipped",
            -2: "not asked for (GPU_CHECK_STEPS)",
        }.get(rc, "")
        record["error"] = "\n".join(([reason] if reason else []) + tail)
    figures = steps / f"{name}.json"
    if figures.is_file():
        try:
            record["figures"] = json.loads(figures.read_text())
        except ValueError as exc:
            record["error"] = f"{record.get('error', '')}\nunreadable figures: {exc}".strip()
    if name == "gpu_tests":
        record["tests"] = {
            word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error)", text)
        }
    if name == "env":
        record["output"] = text.strip().splitlines()[-8:]
    return record


def memory(work: Path, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Peak GPU memory: each benchmark's torch peak, and nvidia-smi's during the searches."""
    out: dict[str, Any] = {}
    for name in ("trial_second", "trial_first", "trial_compiled", "population"):
        peak = records[name].get("figures", {}).get("cuda_peak_memory_bytes")
        if peak is not None:
            out[f"{name}_torch_peak_mib"] = peak / 2**20
    device = _rows(work / "gpu_samples.csv")
    used = [float(r[1]) for r in device if len(r) >= 2 and _number(r[1])]
    if used:
        out["searches_device_peak_mib"] = max(used)
        out["searches_samples"] = len(used)
    busy = [float(r[2]) for r in device if len(r) >= 3 and _number(r[2])]
    if busy:  # nvidia-smi's utilization.gpu: the share of time a kernel ran, in %
        out["searches_gpu_utilization_pct"] = {
            "mean": sum(busy) / len(busy),
            "max": max(busy),
            "samples_over_90": sum(b > 90 for b in busy),
        }
    per_pid: dict[str, float] = {}
    for row in _rows(work / "proc_samples.csv"):
        if len(row) >= 2 and _number(row[1]):
            per_pid[row[0].strip()] = max(per_pid.get(row[0].strip(), 0.0), float(row[1]))
    if per_pid:
        out["searches_process_peak_mib"] = per_pid
    return out


def headline(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The figures issue 11 asks for, each beside its goal (``met`` None where missing)."""
    second = records["trial_second"].get("figures", {})
    compiled = records["trial_compiled"].get("figures", {})
    first = records["trial_first"].get("figures", {}).get("speed_first", {})
    four = records["throughput"].get("figures", {})
    population = records["population"].get("figures", {})
    search = records["search_figures"].get("figures", {})
    pop = records["search_pop_figures"].get("figures", {})
    bank = first.get("images_per_s", {}).get("bank")
    live = first.get("images_per_s", {}).get("live")
    figures = {
        "second_level_images_per_s": second.get("kdtune_images_per_s"),
        "second_level_reference_images_per_s": second.get("reference_images_per_s"),
        "second_level_model_only_images_per_s": second.get("model_only_images_per_s"),
        "second_level_share_of_model_only": second.get("kdtune_share_of_model_only"),
        "second_level_compiled_images_per_s": compiled.get("kdtune_images_per_s"),
        "first_level_bank_images_per_s": bank,
        "first_level_live_images_per_s": live,
        "first_level_bank_over_live": bank / live if bank and live else None,
        "four_trials_over_one": four.get("concurrent_over_one"),
        "population_images_per_s": population.get("population_images_per_s"),
        "population_separate_images_per_s": population.get("separate_images_per_s"),
        "population_over_separate": population.get("population_over_separate"),
        "population_share_of_model_only": population.get("population_share_of_model_only"),
        "search_summed_images_per_s": search.get("search", {}).get("summed_images_per_s"),
        "confirm_summed_images_per_s": search.get("confirm", {}).get("summed_images_per_s"),
        "search_and_confirm_summed_images_per_s": search.get("both", {}).get("summed_images_per_s"),
        "search_gpu_busy_pct": search.get("search", {}).get("gpu_busy_pct"),
        "confirm_gpu_busy_pct": search.get("confirm", {}).get("gpu_busy_pct"),
        "search_and_confirm_gpu_busy_pct": search.get("both", {}).get("gpu_busy_pct"),
        # the same search with its trials and confirmation runs as populations (search_pop)
        "pop_search_summed_images_per_s": pop.get("search", {}).get("summed_images_per_s"),
        "pop_confirm_summed_images_per_s": pop.get("confirm", {}).get("summed_images_per_s"),
        "pop_search_gpu_busy_pct": pop.get("search", {}).get("gpu_busy_pct"),
        "pop_confirm_gpu_busy_pct": pop.get("confirm", {}).get("gpu_busy_pct"),
        "pop_search_and_confirm_gpu_busy_pct": pop.get("both", {}).get("gpu_busy_pct"),
        "rehearsal": records["rehearsal"].get("figures"),
    }
    return {
        key: {
            "value": value,
            "goal": GOALS.get(key),
            "met": None
            if not isinstance(value, int | float) or key not in GOALS
            else value >= GOALS[key],
        }
        for key, value in figures.items()
    }


def _rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [row for row in csv.reader(f) if row]


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True, help="gpu_check.sh's scratch folder")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=None, help="the script's wall time")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    records = {name: step_record(args.work / "steps", name) for name in STEPS}
    report = {
        "device": args.device,
        "note": (
            None
            if args.device == "cuda"
            else "a CPU smoke run of the script at tiny sizes: it checks the plumbing; its "
            "figures measure no GPU and are not comparable with the goals"
        ),
        "seconds": args.seconds,
        "work": str(args.work),
        "ok": all(r["ok"] for r in records.values()),
        "figures": headline(records),
        "peak_memory": memory(args.work, records),
        "steps": records,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("ok", "figures", "peak_memory")}, indent=2))


if __name__ == "__main__":
    main()
