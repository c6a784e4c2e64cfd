#!/usr/bin/env bash
# The quickstart end to end at two commits, side by side: for each run a fresh clone at the
# commit, a fresh virtual environment, and the README's one command (install included), timed.
# Runs alternate A B B A (A B B A ... for more repeats), so a drift in the machine's load falls
# on both; the medians and their ratio are printed at the end, and every run's log is kept.
#
#   bash benchmarks/quickstart_side_by_side.sh OLD NEW [REPEATS] [OUTDIR]
#
# e.g. `bash benchmarks/quickstart_side_by_side.sh 1721b1e HEAD 2 /tmp/qs-vs`. Needs the Python
# the project supports as PYTHON (default: python3), and the pip cache or the package index for
# the installs. Each run clones this repository (its committed history), not the working tree.
set -euo pipefail

old=${1:?usage: quickstart_side_by_side.sh OLD NEW [REPEATS] [OUTDIR]}
new=${2:?usage: quickstart_side_by_side.sh OLD NEW [REPEATS] [OUTDIR]}
repeats=${3:-2}
out=${4:-$(mktemp -d /tmp/kdtune-qs-vs.XXXXXX)}
python=${PYTHON:-python3}
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
old=$(git -C "$repo" rev-parse --short "$old")
new=$(git -C "$repo" rev-parse --short "$new")
mkdir -p "$out"
times="$out/times.tsv"
: >"$times"

one_run() {  # commit label
    local commit=$1 label=$2 work
    work=$(mktemp -d /tmp/kdtune-qs-run.XXXXXX)
    git clone -q "$repo" "$work/clone"
    git -C "$work/clone" checkout -q "$commit"
    "$python" -m venv "$work/venv"
    local flags=""
    local start end
    start=$(date +%s.%N)
    (
        cd "$work/clone"
        source "$work/venv/bin/activate"
        pip install -q torch==2.13.0
        pip install -q -e .
        if kdtune search --help | grep -q -- --no-progress; then flags=--no-progress; fi
        kdtune search search_spaces/quickstart.yaml $flags
    ) >"$out/$label.log" 2>&1
    end=$(date +%s.%N)
    printf '%s\t%s\t%.1f\n' "$commit" "$label" "$(echo "$end - $start" | bc)" | tee -a "$times"
    rm -rf "$work"
}

for ((r = 1; r <= repeats; r++)); do
    if ((r % 2)); then order=("$old" "$new"); else order=("$new" "$old"); fi
    for commit in "${order[@]}"; do one_run "$commit" "$commit-$r"; done
done

"$python" - "$times" "$old" "$new" <<'EOF'
import statistics, sys
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
old, new = sys.argv[2], sys.argv[3]
med = {c: statistics.median(float(s) for k, _, s in rows if k == c) for c in (old, new)}
for c in (old, new):
    runs = ", ".join(s for k, _, s in rows if k == c)
    print(f"{c}: median {med[c]:.0f} s (runs: {runs} s)")
print(f"ratio {old}/{new}: {med[old] / med[new]:.2f}x")
EOF
