#!/usr/bin/env bash
# kdtune on one GPU, measured by one script: about 8 minutes on one H100 or H200.
#
#   benchmarks/gpu_check.sh [OUTDIR]      # OUTDIR: default $OUT if set, else results/gpu_check
#
# Writes OUTDIR/gpu_check.json (every step's figures, exit code, seconds, and its error where it
# failed) and OUTDIR/gpu_check.log (everything the steps printed). Steps, each under its own time
# limit and the script's overall budget; a failing step is recorded and the script goes on:
#
#   env           the GPU (nvidia-smi), torch and CUDA versions
#   gpu_tests     the `gpu`-marked tests (pytest -m gpu)
#   population    a population of 8 tiny students (batch 256 each) against 8 separate trial
#                 processes and the model-only bound at batch 8 x 256
#                 (benchmarks/bench_population.py --device cuda)
#   search_full   the search of issue 21 (benchmarks/gpu_full.yaml: 12 trials x 40 epochs, 4 at
#                 gpu: 0.25, then its confirmation), nvidia-smi sampled every 0.5 s
#   search_figures  its summed training images/s and GPU busy % over the trials, over the
#                 confirmation and over both (benchmarks/search_gpu_figures.py)
#   search_pop    the same search with its trials as populations: budget.population 4 (each
#                 Ray trial trains 4 Optuna trials in lockstep, 3 Ray trials at gpu: 0.33) and
#                 confirm.population auto (each seed's confirmation runs as one population)
#   search_pop_figures  the same figures for it, members' epochs summed
#   trial_second  a second-level trial's images/s on the GPU (bf16, channels_last, batch
#                 $BATCH) beside the reference-style loop and the model-only bound
#                 (benchmarks/bench_trial.py --device cuda)
#   trial_first   the first level with the bank against a live 368-pixel teacher
#                 (benchmarks/bench_targets.py --device cuda --levels first)
#   search_one    one second-level trial holding the whole GPU (kdtune search)
#   search_four   four trials at once, `gpu: 0.25` each (benchmarks/gpu_quarter.yaml)
#   throughput    the four trials' summed images/s against the lone trial's
#                 (benchmarks/search_throughput.py)
#   trial_compiled  the second-level trial again with torch_compile (bench_trial.py --compile)
#   memory        peak GPU memory: each benchmark's torch peak, and nvidia-smi's samples during
#                 the searches (the whole device, and each trial process)
#   rehearsal     only when named in GPU_CHECK_STEPS (it takes minutes of its own): the data
#                 cache, the bank at K = 8, an epoch and peak memory at 64 K training images
#                 (benchmarks/rehearsal.py), e.g.
#                 GPU_CHECK_STEPS="env rehearsal" GPU_CHECK_BUDGET_S=900 benchmarks/gpu_check.sh
#
# Steps run in the order above, the newest figures first (population, search_full); where the
# budget is spent, the steps left are recorded as skipped.
#
# Run from the repository root, with kdtune installed (or PYTHONPATH set) and a CUDA torch.
# Knobs (environment): PYTHON (default python), GPU_CHECK_BUDGET_S (default 470),
# GPU_CHECK_WORK (scratch folder; default a new /tmp/gpu_check.*), GPU_CHECK_STEPS (the steps
# to run, e.g. "env search_one search_four throughput"; default all), GPU_CHECK_DEVICE=cpu (a CPU
# smoke run of the script itself with tiny sizes: checks the plumbing, measures nothing).
set -u

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUTDIR="${1:-${OUT:-results/gpu_check}}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
WORK="${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}"
mkdir -p "$WORK/steps"
PY="${PYTHON:-python}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-470}"
LOG="$OUTDIR/gpu_check.log"
JSON="$OUTDIR/gpu_check.json"
RESULTS="$WORK/results"
STARTED=$(date +%s)
: >"$LOG"
cd "$ROOT" || exit 1
export PYTHONUNBUFFERED=1

if [ "$DEVICE" = cuda ]; then
    BATCH=1024 IMAGES=4096 EPOCHS=4 REPEATS=3 REF_STEPS=60 MODEL_STEPS=40
    FIRST_IMAGES=2048 FIRST_BATCH=512 FIRST_EPOCHS=2 FIRST_REPEATS=2 VIEWS=8 DATA=synthetic
    AMP=(--amp) TESTS=(-m gpu -k "not compiled" tests)  # trial_compiled measures compiling
    SPACE="$ROOT/benchmarks/gpu_quarter.yaml"
    POP_MEMBERS=8 POP_BATCH=256 POP_IMAGES=4096 POP_EPOCHS=3 POP_REPEATS=3
    FULL_SPACE="$ROOT/benchmarks/gpu_full.yaml" FULL_IMAGES=4096 POP_SAMPLES=12
    REHEARSAL=(--images 65536 --batch-size 1024 --views 8 --base synthetic)
else  # the CPU smoke run: the same plumbing on a tiny synthetic set
    BATCH=8 IMAGES=16 EPOCHS=1 REPEATS=1 REF_STEPS=2 MODEL_STEPS=2
    FIRST_IMAGES=4 FIRST_BATCH=4 FIRST_EPOCHS=1 FIRST_REPEATS=1 VIEWS=1 DATA="$WORK/synth"
    AMP=() TESTS=(-m gpu -k "not compiled" tests/test_gpu.py)
    "$PY" -m kdtune.cli data synth --out "$DATA" --n-train 16 --n-val 8 --n-test 4 \
        >>"$LOG" 2>&1 || true
    SPACE="$WORK/smoke_quarter.yaml"
    cat >"$SPACE" <<EOF
name: gpu_quarter
level: second
data: $DATA
budget: {num_samples: 2, max_epochs: 1, eval_every: 1, max_concurrent: 2}
resources: {cpu: 1, gpu: 0}
teacher: {checkpoint: null, recipe: ground_truth, epochs: 1}
train: {batch_size: 8, max_train_images: 16, max_val_images: 8, device: cpu, teacher_views: 1}
metric: val/ap
warm_start: false
sampler: {type: random, seed: 0}
pruner: {type: none}
search:
  weighting:
    fixed:
      alpha: {low: 0.0, high: 1.0, step: 0.5}
EOF
    POP_MEMBERS=2 POP_BATCH=4 POP_IMAGES=8 POP_EPOCHS=1 POP_REPEATS=1
    FULL_SPACE="$WORK/smoke_full.yaml" FULL_IMAGES=16
    sed -e 's/^name: gpu_quarter/name: gpu_full/' "$SPACE" >"$FULL_SPACE"
    echo "confirm: {top_k: 1, seeds: 1}" >>"$FULL_SPACE"
    POP_SAMPLES=4
    REHEARSAL=(--images 16 --batch-size 8 --views 1 --base "$DATA")
fi
# the full search with its trials as populations of 4 (3 Ray trials of 4 at once, a third of
# the GPU each) and its confirmation's runs of one seed as one population
POP_SPACE="$WORK/gpu_pop.yaml"
"$PY" - "$FULL_SPACE" "$POP_SPACE" "$POP_SAMPLES" <<'PYEOF' >>"$LOG" 2>&1
import sys

import yaml

src, dst, samples = sys.argv[1], sys.argv[2], int(sys.argv[3])
space = yaml.safe_load(open(src))
space["name"] = "gpu_pop"
space["budget"].update(num_samples=samples, population=4, max_concurrent=3)
if isinstance(space["resources"], dict) and space["resources"].get("gpu"):
    space["resources"]["gpu"] = 0.33
space.setdefault("confirm", {})["population"] = "auto"
yaml.safe_dump(space, open(dst, "w"), sort_keys=False)
PYEOF
ONE_SPACE="$WORK/gpu_whole.yaml"
sed -e 's/^name: gpu_quarter/name: gpu_whole/' -e 's/num_samples: [0-9]*/num_samples: 1/' \
    -e 's/max_concurrent: [0-9]*/max_concurrent: 1/' -e 's/gpu: 0\.25}/gpu: 1}/' \
    "$SPACE" >"$ONE_SPACE"

# run_step NAME LIMIT_S COMMAND...: run it under min(LIMIT_S, the budget left), its output to
# the log and to steps/NAME.log, its exit code and seconds to steps/NAME.status.
run_step() {
    local name=$1 limit=$2
    shift 2
    if [ -n "${GPU_CHECK_STEPS:-}" ] && [[ " $GPU_CHECK_STEPS " != *" $name "* ]]; then
        echo "=== $name: not asked for (GPU_CHECK_STEPS)" >>"$LOG"
        echo "-2 0" >"$WORK/steps/$name.status"
        return
    fi
    local left=$((BUDGET_S - ($(date +%s) - STARTED)))
    if [ "$left" -lt 15 ]; then
        echo "skipped: the script's ${BUDGET_S} s budget is spent" >"$WORK/steps/$name.log"
        echo "-1 0" >"$WORK/steps/$name.status"
        echo "=== $name: skipped (budget spent)" >>"$LOG"
        return
    fi
    if [ "$name" = rehearsal ] && [[ " ${GPU_CHECK_STEPS:-} " != *" rehearsal "* ]]; then
        echo "=== $name: only when named in GPU_CHECK_STEPS" >>"$LOG"
        echo "-2 0" >"$WORK/steps/$name.status"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "=== $name (limit ${limit} s): $*" >>"$LOG"
    local t0 rc
    t0=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" >"$WORK/steps/$name.log" 2>&1
    rc=$?
    cat "$WORK/steps/$name.log" >>"$LOG"
    echo "$rc $((($(date +%s%N) - t0) / 1000000))" >"$WORK/steps/$name.status"  # ms
    echo "=== $name: exit $rc" >>"$LOG"
}

# nvidia-smi samples while the searches run: the device's memory and each process's (files
# PREFIX_samples.csv and proc_samples.csv, PREFIX default gpu)
sample_memory() {
    command -v nvidia-smi >/dev/null || return 0
    nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader,nounits \
        -lms 500 >"$WORK/${1:-gpu}_samples.csv" 2>/dev/null &
    SMI_GPU=$!
    (while true; do
        nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null
        sleep 0.5
    done) >>"$WORK/proc_samples.csv" &
    SMI_PROC=$!
}
stop_sampling() {
    [ -n "${SMI_GPU:-}" ] && kill "$SMI_GPU" 2>/dev/null
    [ -n "${SMI_PROC:-}" ] && kill "$SMI_PROC" 2>/dev/null
    SMI_GPU="" SMI_PROC=""
}
trap stop_sampling EXIT

run_step env 30 bash -c "git rev-parse HEAD 2>/dev/null; \
nvidia-smi -L 2>&1 || echo 'nvidia-smi: not found'; \"$PY\" -c \
'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \
\"available\", torch.cuda.is_available(), \"devices\", torch.cuda.device_count())'"

run_step gpu_tests 150 "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"

run_step population 150 "$PY" benchmarks/bench_population.py --device "$DEVICE" "${AMP[@]}" \
    --members "$POP_MEMBERS" --batch-size "$POP_BATCH" --images "$POP_IMAGES" \
    --epochs "$POP_EPOCHS" --repeats "$POP_REPEATS" --model-steps "$MODEL_STEPS" --data "$DATA" \
    --results "$RESULTS" --json "$WORK/steps/population.json"

sample_memory full
run_step search_full 220 "$PY" -m kdtune.cli search "$FULL_SPACE" --results "$RESULTS"
stop_sampling
run_step search_figures 30 "$PY" benchmarks/search_gpu_figures.py "$RESULTS/gpu_full" \
    --train-images "$FULL_IMAGES" --samples "$WORK/full_samples.csv" \
    --json "$WORK/steps/search_figures.json"

sample_memory pop
run_step search_pop 220 "$PY" -m kdtune.cli search "$POP_SPACE" --results "$RESULTS"
stop_sampling
run_step search_pop_figures 30 "$PY" benchmarks/search_gpu_figures.py "$RESULTS/gpu_pop" \
    --train-images "$FULL_IMAGES" --samples "$WORK/pop_samples.csv" \
    --json "$WORK/steps/search_pop_figures.json"

run_step trial_second 150 "$PY" benchmarks/bench_trial.py --device "$DEVICE" "${AMP[@]}" \
    --batch-size "$BATCH" --images "$IMAGES" --epochs "$EPOCHS" --repeats "$REPEATS" \
    --reference-steps "$REF_STEPS" --model-steps "$MODEL_STEPS" --data "$DATA" \
    --results "$RESULTS" --json "$WORK/steps/trial_second.json"

run_step trial_first 120 "$PY" benchmarks/bench_targets.py --device "$DEVICE" "${AMP[@]}" \
    --skip-errors --levels first --modes bank live --first-images "$FIRST_IMAGES" \
    --batch-size "$FIRST_BATCH" --epochs "$FIRST_EPOCHS" --repeats "$FIRST_REPEATS" \
    --views "$VIEWS" --data "$DATA" --results "$RESULTS" --json "$WORK/steps/trial_first.json"

sample_memory
run_step search_one 100 "$PY" -m kdtune.cli search "$ONE_SPACE" --results "$RESULTS"
run_step search_four 130 "$PY" -m kdtune.cli search "$SPACE" --results "$RESULTS"
stop_sampling

run_step throughput 30 "$PY" benchmarks/search_throughput.py --one "$RESULTS/gpu_whole" \
    --many "$RESULTS/gpu_quarter" --json "$WORK/steps/throughput.json"

# last, as the least needed: the second-level trial compiled (its cold compile is in the warm-up)
run_step trial_compiled 100 "$PY" benchmarks/bench_trial.py --device "$DEVICE" "${AMP[@]}" \
    --compile --batch-size "$BATCH" --images "$IMAGES" --epochs "$EPOCHS" --repeats 2 \
    --reference-steps 2 --model-steps "$MODEL_STEPS" --data "$DATA" \
    --results "$RESULTS" --json "$WORK/steps/trial_compiled.json"

run_step rehearsal 900 "$PY" benchmarks/rehearsal.py --device "$DEVICE" "${AMP[@]}" \
    "${REHEARSAL[@]}" --results "$RESULTS" --json "$WORK/steps/rehearsal.json"

"$PY" benchmarks/gpu_check_report.py --work "$WORK" --device "$DEVICE" \
    --seconds "$(($(date +%s) - STARTED))" --json "$JSON" >>"$LOG" 2>&1 ||
    echo "{\"error\": \"gpu_check_report.py failed; see gpu_check.log\"}" >"$JSON"
echo "gpu_check: $JSON and $LOG ($(($(date +%s) - STARTED)) s)"
