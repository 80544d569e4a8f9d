#!/usr/bin/env bash
# One-command check of a GPU (or of the software adapter): prints the adapter,
# runs the fast test tier and the quick kernel comparison, and writes a dated
# report (report.md + report.json, with the comparison's results.json and
# charts) to gpu-check/<date>-<adapter>/. Exits non-zero if a step fails.
#
#   bash scripts/gpu-check.sh            # the adapter flashdot picks
#   WGPU_BACKEND=vulkan bash scripts/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
stamp=$(date -u +%Y-%m-%dT%H%MZ)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== building (release)"
cargo build --release --examples --tests -q || exit 1
[ -f models/all-MiniLM-L6-v2/.complete ] || bash scripts/fetch-model.sh || exit 1

echo "== adapter"
if ! cargo run --release -q --example info >"$work/info.txt" 2>"$work/info.err"; then
    cat "$work/info.err"
    exit 1
fi
cat "$work/info.txt"
adapter=$(sed -n 's/^adapter: *//p; s/^name: *//p' "$work/info.txt" | head -1)
[ -n "$adapter" ] || adapter=$(head -1 "$work/info.txt")
slug=$(echo "$adapter" | tr -c 'A-Za-z0-9' '-' | tr -s '-' | sed 's/^-//; s/-$//' | cut -c1-40)
out="gpu-check/${stamp}-${slug:-adapter}"
mkdir -p "$out"
cp "$work/info.txt" "$out/adapter.txt"

echo "== fast test tier (cargo test --release)"
t0=$(date +%s)
# The grep sits in a group so that the pipeline has no `||`: with pipefail,
# `… | grep … || true` left PIPESTATUS holding `true`'s 0 and hid failures.
cargo test --release 2>&1 | tee "$out/tests.log" | { grep -E "^test result|FAILED|panicked" || true; }
tests_rc=${PIPESTATUS[0]}
if [ "$tests_rc" -ne 0 ]; then
    echo "-- the fast tier failed; the end of $out/tests.log:"
    tail -n 120 "$out/tests.log"
fi
tests_s=$(( $(date +%s) - t0 ))
passed=$(grep -Eo '[0-9]+ passed' "$out/tests.log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$out/tests.log" | awk '{s+=$1} END {print s+0}')

echo "== kernel comparison (--quick)"
t0=$(date +%s)
cargo run --release -q --example compare -- --quick --out "$out/compare" 2>"$out/compare.err" | tee "$out/compare.md"
compare_rc=${PIPESTATUS[0]}
compare_s=$(( $(date +%s) - t0 ))
total_s=$(( $(date +%s) - start ))

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)
status=pass
[ "$tests_rc" -eq 0 ] && [ "$compare_rc" -eq 0 ] || status=fail
{
    echo "# flashdot GPU check: $adapter"
    echo
    echo "- date: $stamp, commit $commit, host CPU: ${cpu:-unknown}"
    echo "- result: **$status** — tests: $passed passed, $failed failed (${tests_s} s); comparison: exit $compare_rc (${compare_s} s); total ${total_s} s"
    echo
    echo '## Adapter'
    echo
    echo '```'
    cat "$work/info.txt"
    echo '```'
    echo
    echo '## Kernel comparison (quick)'
    echo
    cat "$out/compare.md"
} >"$out/report.md"
python3 - "$out/report.json" <<PY
import json, sys
json.dump({
    "date": "$stamp", "commit": "$commit", "host_cpu": """${cpu:-unknown}""",
    "adapter": """$adapter""", "status": "$status",
    "tests": {"passed": $passed, "failed": $failed, "exit": $tests_rc, "seconds": $tests_s},
    "compare": {"exit": $compare_rc, "seconds": $compare_s, "results": "compare/results.json"},
    "total_seconds": $total_s,
}, open(sys.argv[1], "w"), indent=1)
PY
echo "== $status in ${total_s} s: $out/report.md, $out/report.json"
[ "$status" = pass ]
