"""The benchmark scripts that ``benchmarks/gpu_check.sh`` calls: each parses its arguments and,
where cheap, runs on the CPU with tiny sizes; the script itself fails soft, step by step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = (
    "bench_trial.py",
    "bench_targets.py",
    "bench_compile.py",
    "eval_native_grid.py",
    "search_throughput.py",
    "gpu_check_report.py",
    "bench_population.py",
    "search_gpu_figures.py",
    "rehearsal.py",
)
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
)


def _env() -> dict[str, str]:
    """This checkout first on the path (the scripts import kdtune), as the CLI tests do."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_benchmark_parses_its_arguments(script: str) -> None:
    done = _run([sys.executable, str(BENCH / script), "--help"])
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "--json" in done.stdout


def test_the_gpu_flags_are_there() -> None:
    trial = _run([sys.executable, str(BENCH / "bench_trial.py"), "--help"]).stdout
    targets = _run([sys.executable, str(BENCH / "bench_targets.py"), "--help"]).stdout
    for flag in ("--device", "--batch-size", "--reference-batch-size", "--data", "--amp"):
        assert flag in trial
    for flag in ("--device", "--levels", "--modes", "--views", "--skip-errors", "--epochs"):
        assert flag in targets


def test_bench_trial_runs_on_cpu_with_tiny_sizes(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "trial.json"
    tiny = "--repeats 1 --epochs 1 --images 16 --reference-steps 2 --model-steps 2"
    paths = ["--data", str(synth_root), "--results", str(tmp_path / "results"), "--json", str(out)]
    script = str(BENCH / "bench_trial.py")
    done = _run([sys.executable, script, *tiny.split(), "--batch-size", "8", *paths])
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    for key in ("kdtune_images_per_s", "reference_images_per_s", "model_only_images_per_s"):
        assert figures[key] > 0, key
    assert figures["device"] == "cpu" and figures["cuda_peak_memory_bytes"] is None


@pytest.mark.slow
def test_bench_targets_runs_on_cpu_with_tiny_sizes(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "targets.json"
    tiny = "--skip-errors --levels second --second-images 8 --batch-size 8 --views 1 --repeats 1"
    paths = ["--data", str(synth_root), "--results", str(tmp_path / "results"), "--json", str(out)]
    script = str(BENCH / "bench_targets.py")
    done = _run([sys.executable, script, *tiny.split(), "--modes", "bank", "live", *paths])
    assert done.returncode == 0, done.stderr[-2000:]
    speeds = json.loads(out.read_text())["speed_second"]["images_per_s"]
    assert set(speeds) == {"bank", "live"} and all(v > 0 for v in speeds.values())


def _gpu_check(tmp_path: Path, budget_s: int, timeout_s: int = 900) -> dict[str, Any]:
    env = {
        **_env(),
        "GPU_CHECK_DEVICE": "cpu",
        "GPU_CHECK_BUDGET_S": str(budget_s),
        "GPU_CHECK_WORK": str(tmp_path / "work"),
        "PYTHON": sys.executable,
    }
    script = [str(BENCH / "gpu_check.sh"), str(tmp_path / "out")]
    done = subprocess.run(
        ["bash", *script], capture_output=True, text=True, cwd=ROOT, timeout=timeout_s, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "gpu_check.log").is_file()
    report: dict[str, Any] = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    return report


def test_gpu_check_fails_soft_and_still_writes_its_json(tmp_path: Path) -> None:
    report = _gpu_check(tmp_path, budget_s=0)  # no time for any step: each is recorded so
    assert report["ok"] is False
    for step in STEPS:
        assert report["steps"][step]["ok"] is False
        assert "budget" in report["steps"][step]["error"]
    assert all(f["value"] is None and f["met"] is None for f in report["figures"].values())


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_gpu_check_runs_through_on_cpu_with_tiny_sizes(tmp_path: Path) -> None:
    # the CPU smoke run does every step of the GPU check at tiny sizes (two searches with their
    # confirmations among them): its budget is the plumbing's, not the GPU's 8 minutes
    report = _gpu_check(tmp_path, budget_s=1200, timeout_s=1400)
    failed = {k: v.get("error") for k, v in report["steps"].items() if not v["ok"]}
    assert not failed, failed
    assert report["steps"]["gpu_tests"]["tests"].get("failed", 0) == 0
    figures = report["figures"]
    for key in (
        "second_level_images_per_s",
        "first_level_bank_over_live",
        "four_trials_over_one",
        "population_over_separate",
        "search_summed_images_per_s",
        "confirm_summed_images_per_s",
        "pop_search_summed_images_per_s",
        "pop_confirm_summed_images_per_s",
    ):
        assert figures[key]["value"] > 0, key
    assert report["steps"]["rehearsal"]["skipped"]  # only when asked for
