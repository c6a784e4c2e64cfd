"""The known-answer benchmark: its statistics, its judge, the run key that decides reuse (shared
with ratio_seeds.py), and one tiny table end to end (slow)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import known_answer  # noqa: E402
import reuse  # noqa: E402

from kdtune.errors import KdtuneError  # noqa: E402
from kdtune.results import SearchResult, TrialRecord  # noqa: E402
from kdtune.space import load_space  # noqa: E402


def test_t_interval_golden() -> None:
    # mean 2, sd √2, n 2: standard error 1, 2 ± t(0.975, 1) = 2 ± 12.706205
    low, high = known_answer.t_interval([1.0, 3.0])
    assert low == pytest.approx(2 - 12.706205, abs=1e-6)
    assert high == pytest.approx(2 + 12.706205, abs=1e-6)
    assert all(math.isnan(v) for v in known_answer.t_interval([1.0]))


def test_summarise_pairs_each_seed_with_alpha_one() -> None:
    rows = known_answer.summarise({"fixed:0": {0: 0.40, 1: 0.50}, "fixed:0.75": {0: 0.42, 1: 0.53}})
    base, other = rows
    assert base["mean"] == pytest.approx(0.45) and "diff_vs_alpha1" not in base
    diff = other["diff_vs_alpha1"]
    assert diff["mean"] == pytest.approx(0.025) and diff["n"] == 2
    assert diff["sd"] == pytest.approx(math.sqrt(2) * 0.005)
    assert other["words"] == "α 0.25 / β 0.75"


@pytest.mark.parametrize(
    ("claim", "low", "high", "margin", "expected"),
    [
        ("beats", 0.01, 0.02, None, "holds"),
        ("beats", -0.02, -0.01, None, "contradicted"),
        ("beats", -0.01, 0.02, None, "truth cannot tell"),
        ("trails", -0.02, -0.01, None, "holds"),
        ("trails", 0.01, 0.02, None, "contradicted"),
        ("indistinguishable", -0.01, 0.02, None, "holds"),
        ("indistinguishable", 0.01, 0.02, None, "contradicted"),
        ("equivalent", -0.002, 0.003, 0.005, "holds"),
        ("equivalent", 0.006, 0.01, 0.005, "contradicted"),
        ("equivalent", 0.001, 0.01, 0.005, "truth cannot tell"),
    ],
)
def test_claims_against_the_truth(
    claim: str, low: float, high: float, margin: float | None, expected: str
) -> None:
    truth = {"mean": (low + high) / 2, "low": low, "high": high}
    assert known_answer.check_claim(claim, truth, margin) == expected


# ----------------------------------------------------------------------------- judge


def _truth(config: dict[str, Any]) -> dict[str, Any]:
    aps = {
        "fixed:0": {0: 0.40, 1: 0.41, 2: 0.42},
        "fixed:0.75": {0: 0.45, 1: 0.46, 2: 0.47},  # +0.05 on every seed: the best
        "fixed:0.5": {0: 0.42, 1: 0.43, 2: 0.44},  # +0.02 on every seed
    }
    return {"kind": "slice", "config": config, "table": known_answer.summarise(aps)}


def _search(folder: Path, config: dict[str, Any], verdict: dict[str, Any]) -> Path:
    trial = TrialRecord(trial_id="t0", state="COMPLETE", config={**config, "seed": 7})
    result = SearchResult(
        name="s", space_file="x.yaml", results_dir=str(folder), trials=[trial], verdict=verdict
    )
    folder.mkdir(parents=True, exist_ok=True)
    result.save(folder / "search.json")
    return folder


def _comparison(against: str, mean: float, low: float, high: float) -> dict[str, Any]:
    return {"against": against, "mean": mean, "low": low, "high": high, "sentence": "…"}


def test_judge_regret_and_claims(tmp_path: Path) -> None:
    config = load_space(ROOT / "search_spaces" / "quickstart.yaml").trial_config()
    truth_file = tmp_path / "truth.json"
    truth_file.write_text(json.dumps(_truth(config)))
    verdict = {
        "recommended": "fixed:0.5",
        "ranking": [{"schedule": "fixed:0.5", "mean": 0.43, "se": 0.01, "values": {}}],
        "comparisons": [
            _comparison("fixed:0.75", 0.01, 0.002, 0.02),  # claims 0.5 beats 0.75: false
            _comparison("fixed:0", 0.02, -0.01, 0.04),  # claims no difference: truth differs
        ],
    }
    search = _search(tmp_path / "search", config, verdict)
    report = known_answer.judge(search, truth_file)
    assert report["truth_best"] == "fixed:0.75"
    assert report["regret"] == pytest.approx(0.46 - 0.43)
    checks = {c["against"]: c["check"] for c in report["claims"]}
    assert checks == {"fixed:0.75": "contradicted", "fixed:0": "contradicted"}
    assert report["claims"][0]["truth"]["mean"] == pytest.approx(0.43 - 0.46)

    assert "picked_by" not in report
    # picked by the pooled model: the race's leader by mean is judged beside it
    verdict["picked"] = {"by": "pooled model", "leader_by_mean": "fixed:0"}
    report = known_answer.judge(_search(tmp_path / "s1", config, verdict), truth_file)
    assert report["picked_by"] == "pooled model" and report["leader_by_mean"] == "fixed:0"
    truth = {r["schedule"]: r["mean"] for r in _truth(config)["table"]}
    assert report["regret_leader_by_mean"] == pytest.approx(0.46 - truth["fixed:0"])
    del verdict["picked"]

    verdict["recommended"] = "linear:0.7:0.4"  # not in the table: no regret, said why
    report = known_answer.judge(_search(tmp_path / "s2", config, verdict), truth_file)
    assert report["regret"] is None and "not in the truth table" in report["why_no_regret"]


def test_judge_reads_the_blocks_outcome_not_the_bare_interval(tmp_path: Path) -> None:
    """The block says "undecided" where Holm's family-wise test did not reject, even when the
    comparison's own 95 % interval excludes 0: the judge checks what the block claims."""
    config = load_space(ROOT / "search_spaces" / "quickstart.yaml").trial_config()
    truth_file = tmp_path / "truth.json"
    truth_file.write_text(json.dumps(_truth(config)))
    block = {
        "recommended": "fixed:0.5",
        "margin": 0.005,
        "comparisons": [
            {**_comparison("fixed:0", 0.02, 0.005, 0.035), "subject": "fixed:0.5",
             "outcome": "undecided"},
            {**_comparison("fixed:0.75", -0.03, -0.04, -0.02), "subject": "fixed:0.5",
             "outcome": "trails"},
            {**_comparison("fixed:0.5", 0.05, 0.04, 0.06), "subject": "fixed:0.75",
             "outcome": "beats"},
        ],
    }  # fmt: skip
    report = known_answer.judge(_search(tmp_path / "s", config, block), truth_file)
    got = [(c["subject"], c["against"], c["claim"], c["check"]) for c in report["claims"]]
    assert got == [
        ("fixed:0.5", "fixed:0", "undecided", "no claim to check"),
        ("fixed:0.5", "fixed:0.75", "trails", "holds"),
        ("fixed:0.75", "fixed:0.5", "beats", "holds"),  # judged as subject − against
    ]


def test_judge_refuses_another_budget(tmp_path: Path) -> None:
    config = load_space(ROOT / "search_spaces" / "quickstart.yaml").trial_config()
    truth_file = tmp_path / "truth.json"
    truth_file.write_text(json.dumps(_truth(config)))
    verdict = {"recommended": "fixed:0.75", "ranking": [], "comparisons": []}
    search = _search(tmp_path / "s", {**config, "epochs": 3}, verdict)
    with pytest.raises(KdtuneError, match=r"another budget than the truth table .*epochs 3 vs 12"):
        known_answer.judge(search, truth_file)
    report = known_answer.judge(search, truth_file, allow_mismatch=True)
    assert report["budget_mismatch"] == ["epochs"] and report["regret"] == 0.0


def test_judge_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = str(ROOT / "benchmarks" / "known_answer.py")
    args = [sys.executable, script, "judge", str(tmp_path), "--truth", str(tmp_path / "t.json")]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "no search.json" in done.stderr


# ----------------------------------------------------------------------------- the run key


SHARED = {
    "data": "synthetic",
    "data_fingerprint": "a" * 16,
    "val_images": 512,
    "teacher_digest": "t" * 16,
    "code_digest": "c" * 64,
    "device": "cpu",
    "cpu": "some CPU",
    "cpu_capability": "AVX512",
    "torch_threads": 1,
    "torch": "2",
    "key_version": 2,
}


def test_the_run_key_changes_with_everything_that_shapes_a_run() -> None:
    config = load_space(ROOT / "search_spaces" / "quickstart.yaml").trial_config()
    key = reuse.run_key(config, SHARED)
    assert key == reuse.run_key(dict(config), dict(SHARED))
    assert key == reuse.run_key({**config, "extra": {"label": "x"}}, SHARED)  # a label only
    # a default spelled out is the same run
    assert reuse.run_key({k: v for k, v in config.items() if k != "lr"}, SHARED) == key
    changed = [
        reuse.run_key({**config, "seed": 1}, SHARED),
        reuse.run_key({**config, "max_val_images": 128}, SHARED),
        reuse.run_key({**config, "teacher_views": 4}, SHARED),
        *(reuse.run_key(config, {**SHARED, k: "other"}) for k in SHARED),
    ]
    assert key not in changed and len(set(changed)) == len(changed)


def test_the_cpu_model_is_read_from_the_machine() -> None:
    """A run is reproducible only on the same kind of CPU, so its model is in the key."""
    model = reuse.cpu_model()
    assert model
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():
        assert f"model name\t: {model}" in cpuinfo.read_text()


def test_code_digest_follows_the_source(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    first = reuse.code_digest(pkg)
    (pkg / "notes.txt").write_text("not code")
    assert reuse.code_digest(pkg) == first
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert reuse.code_digest(pkg) != first
    assert len(reuse.code_digest()) == 64


def test_run_folder_records_its_parts(tmp_path: Path) -> None:
    config = load_space(ROOT / "search_spaces" / "quickstart.yaml").trial_config()
    folder = reuse.run_folder(tmp_path, config, SHARED)
    assert folder.name == reuse.run_key(config, SHARED)
    record = json.loads((folder / "key.json").read_text())
    assert record["teacher_digest"] == SHARED["teacher_digest"] and "commit" in record
    assert record["config"]["max_train_images"] == config["max_train_images"] == 512


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_tiny_table_runs_then_is_reused_then_retrains_when_the_data_changes(
    synth_root: Path, tmp_path: Path
) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(
        (ROOT / "search_spaces" / "quickstart.yaml")
        .read_text()
        .replace("data: synthetic-cocolike", f"data: {synth_root}")
        .replace("checkpoint: null", f"checkpoint: {ROOT / 'kdtune' / 'teachers' / 'med.pt'}")
        .replace("teacher_views: 8", "teacher_views: 1")
    )
    out = tmp_path / "t.json"
    args = ["run", "--space", str(space), "--configs", "fixed:0.75", "--seeds", "2",
            "--epochs", "1", "--train-images", "8", "--val-images", "6", "--batch-size", "4",
            "--workers", "1", "--results", str(tmp_path / "r"), "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = [sys.executable, str(ROOT / "benchmarks" / "known_answer.py")]
    done = subprocess.run([*script, *args], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    first = json.loads(out.read_text())
    assert first["kind"] == "slice" and first["shared"]["val_images"] == 6
    assert [r["schedule"] for r in first["table"]] == ["fixed:0", "fixed:0.75"]  # α 1 added
    assert first["timing"]["trained"] == 4 and first["timing"]["mean_run_wall_s"] > 0
    assert "diff_vs_alpha1" in first["table"][1]
    done = subprocess.run([*script, *args], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads(out.read_text())
    assert again["timing"]["trained"] == 0 and again["table"] == first["table"]
    # another validation size: nothing is reused
    args[args.index("--val-images") + 1] = "5"
    done = subprocess.run([*script, *args], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(out.read_text())["timing"]["trained"] == 4


@pytest.mark.slow
def test_a_tiny_table_as_populations_matches_separate_runs(
    synth_root: Path, tmp_path: Path
) -> None:
    """``--population``: each seed's configurations train as one population; the table's APs
    are those of the same runs trained one by one, within the population fit's tolerance."""
    space = tmp_path / "tiny.yaml"
    space.write_text(
        (ROOT / "search_spaces" / "quickstart.yaml")
        .read_text()
        .replace("data: synthetic-cocolike", f"data: {synth_root}")
        .replace("checkpoint: null", f"checkpoint: {ROOT / 'kdtune' / 'teachers' / 'med.pt'}")
        .replace("teacher_views: 8", "teacher_views: 1")
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = [sys.executable, str(ROOT / "benchmarks" / "known_answer.py")]
    tables = {}
    for how in ("population", "separate"):
        out = tmp_path / f"{how}.json"
        args = ["run", "--space", str(space), "--configs", "fixed:0.75,linear:0.9:0.5",
                "--seeds", "2", "--epochs", "2", "--train-images", "16", "--val-images", "8",
                "--batch-size", "8", "--workers", "1", "--results", str(tmp_path / how),
                "--out", str(out)]  # fmt: skip
        args += ["--population"] if how == "population" else []
        done = subprocess.run([*script, *args], capture_output=True, text=True, env=env,
                              timeout=900)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        tables[how] = json.loads(out.read_text())
    pop, sep = tables["population"], tables["separate"]
    assert pop["timing"]["trained_as"] == "one population per seed"
    assert {r["population"] for r in pop["runs"]} == {3}  # α 1 and the two configurations
    assert pop["timing"]["trained"] == sep["timing"]["trained"] == 6
    ap = {(r["schedule"], r["seed"]): r["val/ap"] for r in sep["runs"]}
    for r in pop["runs"]:
        assert r["val/ap"] == pytest.approx(ap[(r["schedule"], r["seed"])], abs=0.02), r


def test_the_recommendation_rule_simulation_holds_out_its_truth_and_scores_both_rules() -> None:
    import recommend_rule

    aps = recommend_rule.load(ROOT / "benchmarks" / "known_answer" / "synthetic-cocolike.json")
    # one simulated quickstart: each rule recommends a raced weighting, regret ≥ 0 against the
    # seeds it did not see
    out = recommend_rule.one_quickstart(aps, np.random.default_rng(0), race_seeds=3)
    assert set(out) == {"mean", "pooled"}
    for chosen, regret, said, truth in out.values():
        assert chosen in aps and regret >= 0.0
        # the verdict's claims: the recommendation against each other racer, and nothing else
        assert chosen not in said and len(said) == 2 and set(truth) == set(said)
        assert set(said.values()) <= {"beats", "trails", "equivalent", "undecided"}
    # a truth where ground truth alone is best by far: both rules find it nearly always
    falling = recommend_rule.reshaped(aps, lambda f: 0.03 - 0.2 * f[0])
    assert np.mean(list(falling["fixed:0"].values())) == pytest.approx(0.03)
    result = recommend_rule.simulate(falling, 60, 3, 0)
    assert result["pooled"]["recommended"].get("fixed:0", 0) > 0.95
    # on the table as measured the pooled rule's regret is below the race mean's (6000
    # quickstarts in the stored figures; 300 here, a fixed draw)
    result = recommend_rule.simulate(aps, 300, 3, 0)
    assert result["pooled"]["mean_regret"] < result["mean"]["mean_regret"]
    for rule in result.values():
        assert 0.0 <= rule["p_within_target"] <= 1.0
        assert sum(rule["recommended"].values()) == pytest.approx(1.0)


def _table(means: dict[str, float], noise: float, seeds: int, rng_seed: int = 0) -> Any:
    rng = np.random.default_rng(rng_seed)
    return {c: {s: m + noise * float(rng.normal()) for s in range(seeds)} for c, m in means.items()}


def test_the_simulated_verdict_holds_a_claim_only_where_the_runs_bear_it() -> None:
    import recommend_rule

    racers = ["fixed:1", "fixed:0.75", "fixed:0"]
    # 0.02 apart on every seed, almost no noise: both differences hold
    apart = _table({"fixed:1": 0.05, "fixed:0.75": 0.03, "fixed:0": 0.01}, 1e-4, 12)
    said = recommend_rule.claims(apart, "fixed:1", racers, range(12))
    assert said == {"fixed:0.75": "beats", "fixed:0": "beats"}
    assert recommend_rule.claims(apart, "fixed:0", racers, range(12)) == {
        "fixed:1": "trails",
        "fixed:0.75": "trails",
    }
    # equal to 1e-4 AP: equivalent within ±0.005
    same = _table(dict.fromkeys(racers, 0.03), 1e-4, 12)
    assert set(recommend_rule.claims(same, "fixed:1", racers, range(12)).values()) == {"equivalent"}
    # the same means under the quickstart's noise (sd 0.01) on 3 seeds: nothing can be said
    noisy = _table(dict.fromkeys(racers, 0.03), 0.01, 3)
    assert set(recommend_rule.claims(noisy, "fixed:1", racers, range(3)).values()) == {"undecided"}


def test_the_simulated_model_claims_join_the_family_and_the_truth_judges_every_claim() -> None:
    import recommend_rule

    # claims against the truth's difference (recommendation − racer)
    contradicted = recommend_rule.contradicted
    assert contradicted("beats", -0.001) and contradicted("beats", 0.0)
    assert not contradicted("beats", 0.002) and not contradicted("trails", -0.002)
    assert contradicted("equivalent", 0.005) and contradicted("equivalent by the model", -0.006)
    assert not contradicted("equivalent by the model", 0.0049)
    assert not contradicted("undecided", 0.5)
    aps = recommend_rule.load(ROOT / "benchmarks" / "known_answer" / "synthetic-cocolike.json")
    row = recommend_rule.settle(aps, 30, 6, 0, parametric=True, top_k=4, model_claims=True)
    assert row["model_claims"] and sum(row["claims"].values()) == pytest.approx(1.0)
    assert 0.0 <= row["contradicted"]["p_block"] <= 1.0
    plain = recommend_rule.settle(aps, 30, 6, 0, parametric=True, top_k=4)
    assert plain["claims"]["equivalent by the model"] == 0.0
    # the same draws with and without the model's claims: agreement does not fall (it could in
    # principle: the larger Holm family makes the paired claims' first steps stricter)
    assert row["p_3_agree"] >= plain["p_3_agree"]


def test_quickstarts_agree_when_equal_or_declared_equivalent_by_one_of_the_two() -> None:
    agree = known_answer.agree
    assert agree([("a", {}), ("a", {}), ("a", {})])
    assert not agree([("a", {"b": "undecided"}), ("b", {"a": "undecided"}), ("a", {})])
    assert agree([("a", {"b": "equivalent"}), ("b", {}), ("a", {"b": "equivalent"})])
    # a pair neither verdict declares equivalent breaks the agreement
    assert not agree([("a", {"b": "equivalent"}), ("b", {}), ("c", {"a": "equivalent"})])
    assert not agree([("a", {"b": "differs"}), ("b", {"a": "differs"})])


def test_drawn_races_follow_the_tables_means_and_covariance_and_settle_flat_truths() -> None:
    import recommend_rule

    aps = recommend_rule.load(ROOT / "benchmarks" / "known_answer" / "synthetic-cocolike.json")
    specs, mean, cov = recommend_rule.gaussian(aps)
    assert specs == sorted(aps) and cov.shape == (len(specs), len(specs))
    assert mean[specs.index("fixed:1")] == pytest.approx(np.mean(list(aps["fixed:1"].values())))
    big = recommend_rule.drawn((specs, mean, cov), 4000, np.random.default_rng(0))
    x = np.array([[big[c][s] for c in specs] for s in range(4000)])
    assert np.allclose(x.mean(axis=0), mean, atol=4 * np.sqrt(np.diag(cov) / 4000).max())
    assert np.allclose(np.cov(x, rowvar=False), cov, atol=0.15 * np.abs(cov).max())
    # every configuration equal, runs 1e-4 apart: the verdicts declare the racers equivalent
    # (but for the few false "differs" a 5 % family-wise level lets through);
    # quickstarts that race different candidates still cannot agree (neither raced the
    # other's), those that race every candidate (top_k 4 of the warm start's 4) always do
    flat = _table(dict.fromkeys(aps, 0.03), 1e-4, 16)
    row = recommend_rule.settle(flat, 60, 6, 0, parametric=False)
    assert row["claims"]["equivalent"] >= 0.9 and row["p_3_agree"] < 1.0
    assert row["mean_regret"] < 1e-3 and row["race_runs"] == 18
    row = recommend_rule.settle(flat, 30, 6, 0, parametric=False, top_k=4)
    assert row["p_3_agree"] >= 0.8 and row["race_runs"] == 36
    # the measured table at the quickstart's race (3 seeds): no equivalence is ever declared
    row = recommend_rule.settle(aps, 60, 3, 0, parametric=False)
    assert row["claims"]["equivalent"] == 0.0 and row["p_3_agree"] < 0.6


def _report(name: str, recommended: str, regret: float, said: dict[str, tuple[str, str]]) -> Any:
    """A judged report as ``judge`` writes it: ``said`` maps each raced configuration to the
    verdict's claim of the recommendation against it and the truth's check of that claim."""
    claims = [
        {"subject": recommended, "against": b, "sentence": f"{recommended} vs {b}: {claim}",
         "claim": claim, "check": check}
        for b, (claim, check) in said.items()
    ]  # fmt: skip
    return {"search": name, "recommended": recommended, "regret": regret, "claims": claims}


def test_judged_quickstarts_together_median_regret_contradictions_and_agreement(
    tmp_path: Path,
) -> None:
    undecided = ("undecided", "no claim to check")
    a = _report("a", "fixed:1", 0.0, {"fixed:0.9": undecided, "fixed:0": ("beats", "holds")})
    b = _report("b", "fixed:0.9", 0.0024, {"fixed:1": undecided})
    c = _report("c", "fixed:1", 0.0, {"fixed:0": ("beats", "holds")})
    t = known_answer.together([a, b, c])
    assert t["median_regret"] == 0.0 and t["median_regret_within_target"]
    assert t["recommended"] == ["fixed:1", "fixed:0.9", "fixed:1"]
    assert not t["agree"]  # b differs from a and c, and no verdict declares them equivalent
    assert (t["claims"], t["decided_claims"], t["contradicted"]) == (4, 2, [])
    # b's verdict declaring its pick equivalent to α 0 settles both of its pairs
    b_eq = _report("b", "fixed:0.9", 0.0024, {"fixed:1": ("equivalent", "truth cannot tell")})
    assert known_answer.together([a, b_eq, c])["agree"]
    # a claim the truth contradicts is named; a regret above 0.003 at the median fails
    bad = _report("d", "fixed:0.75", 0.0042, {"fixed:0": ("trails", "contradicted")})
    t = known_answer.together([bad, bad, a])
    assert t["median_regret"] == 0.0042 and not t["median_regret_within_target"]
    assert t["contradicted"] == [{"search": "d", "sentence": "fixed:0.75 vs fixed:0: trails"}] * 2
    # the command: a report file per quickstart; a missing or broken one is one line, exit 2
    files = []
    for i, report in enumerate([a, b, c]):
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps(report))
    script = str(ROOT / "benchmarks" / "known_answer.py")
    out = subprocess.run(
        [sys.executable, script, "agree", *map(str, files), "--json", str(tmp_path / "t.json")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "recommendations equal or declared equivalent: no" in out.stdout
    assert json.loads((tmp_path / "t.json").read_text())["regrets"] == [0.0, 0.0024, 0.0]
    (tmp_path / "broken.json").write_text("{")
    for bad_file in (tmp_path / "missing.json", tmp_path / "broken.json"):
        r = subprocess.run([sys.executable, script, "agree", str(bad_file), str(files[0])],
                           capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    with pytest.raises(KdtuneError, match="at least 2"):
        known_answer.together([a])


def test_model_equivalence_reads_the_pooled_models_difference_against_the_margin() -> None:
    import model_equivalence

    from kdtune.pooled import Run, fit

    rng = np.random.default_rng(0)
    beta = {"fixed:0": 0.0, "fixed:0.5": 0.5, "fixed:0.9": 0.9, "fixed:1": 1.0}
    runs = [
        Run(spec, seed, 0.02 * b - 0.005 * b * b + 0.01 * seed + rng.normal(0, 1e-5))
        for seed in range(6)
        for spec, b in beta.items()
    ]
    model = fit(runs)
    assert model is not None
    claims = model_equivalence.model_claims
    said = claims(model, "fixed:1", ["fixed:0.9", "fixed:0"], 0.005, 0.05, 6)
    # AP(β̄ 1) − AP(β̄ 0.9) = 0.02·0.1 − 0.005·0.19 = 0.00105: inside ±0.005; against α 1: 0.015
    assert said["fixed:0.9"]["mean"] == pytest.approx(0.00105, abs=1e-4)
    assert said["fixed:0.9"]["equivalent"] and not said["fixed:0"]["equivalent"]
    assert said["fixed:0"]["mean"] == pytest.approx(0.015, abs=1e-4)
    # the same design with seed noise of 0.01 per run: the model can no longer say it
    noisy = [Run(r.schedule, r.seed, r.ap + rng.normal(0, 0.01)) for r in runs]
    loose = fit(noisy)
    assert loose is not None
    assert not claims(loose, "fixed:1", ["fixed:0.9"], 0.005, 0.05, 6)["fixed:0.9"]["equivalent"]
