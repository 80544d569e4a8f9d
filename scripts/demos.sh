#!/usr/bin/env bash
# Runs every demo the README lists, on small sizes, and checks what a newcomer
# would see: each run exits 0 with nothing alarming on stderr (no error line,
# no wgpu ERROR log, no panic); then bad input (a wrong flag, a missing or
# corrupt file, an empty size, a shape no variant serves) ends with a one-line
# error and a non-zero exit, no backtrace. Exits non-zero if any check fails.
#
#   bash scripts/demos.sh
set -uo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q --examples || exit 1
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() {  # ok NAME ARGS...: must exit 0 with a quiet stderr
    local name=$1; shift
    local t0=$SECONDS
    if ! cargo run --release -q --example "$name" -- "$@" >"$tmp/out" 2>"$tmp/err"; then
        echo "FAIL $name $*: exit non-zero"; tail -n 5 "$tmp/err"; failed=1; return
    fi
    if grep -Eiq "error|panick|warn|backtrace" "$tmp/err"; then
        echo "FAIL $name $*: alarming stderr"; head -n 5 "$tmp/err"; failed=1; return
    fi
    echo "ok   $name $* ($((SECONDS - t0)) s, $(wc -l <"$tmp/out") lines)"
}

refused() {  # refused NAME ARGS...: must exit non-zero with one line on stderr
    local name=$1; shift
    if cargo run --release -q --example "$name" -- "$@" >"$tmp/out" 2>"$tmp/err"; then
        echo "FAIL $name $*: exit 0 on bad input"; failed=1; return
    fi
    local lines
    lines=$(grep -cv '^\s*$' "$tmp/err")
    # clap prints its usage after the error line; that is still a short error.
    if grep -q "panicked\|backtrace" "$tmp/err" || { [ "$lines" -gt 1 ] && ! grep -q "^Usage:\|For more information" "$tmp/err"; }; then
        echo "FAIL $name $*: not a one-line error"; cat "$tmp/err"; failed=1; return
    fi
    echo "ok   $name $* -> $(head -n 1 "$tmp/err")"
}

echo "== demos (small sizes)"
ok info
ok attention                      # the README's first command, as given
ok attention --heads 2 --seq 128 --cache 512 --window 16 --softcap 10 --alibi --paged 16 --options-only --reps 1
ok attention_backward --heads 2 --seq 128 --reps 1
ok matmul --rows 64 --reps 1
ok dot --n 10000 --reps 1
ok search --n 20000 --batch 8 --save "$tmp/index.fdindex" --remove 0.1
ok search --n 20000 --batch 8 --load "$tmp/index.fdindex"
ok search --n 20000 --batch 8 --shards 2 --metric ip --storage int8
ok search --n 20000 --batch 8 --metric l2 --filter 0.01
ok search --n 1000 --dim 64 --batch 8 --index ivf --nlist 8 --nprobe 4 --niter 3
ok embed "The weather is lovely today." "It's so sunny outside!"
ok semantic_search --limit 64 "How do I open a file for reading?"
ok wgpu_interop
ok train_gpt2 --steps 20 --batch 4 --seq 32 --cpu-steps 1 --out "$tmp/gpt2"
ok generate --model "$tmp/gpt2" --max-new 16 --chunk 4 "def " "The"
ok generate --model "$tmp/gpt2" --max-new 8 --cache contiguous --temperature 0 "If the"
ok compare --quick --out "$tmp/report"
# The report's files: valid JSON with its run metadata, charts with titled axes.
if ! python3 - "$tmp/report" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
doc = json.loads((d / "results.json").read_text())
meta = doc["meta"]
for key in ("date", "commit", "host_cpu", "adapter", "driver", "repetitions", "quick"):
    assert key in meta, f"results.json: meta has no {key}"
recs = doc["records"]
for fam in ("dot", "matmul", "attention", "search"):
    assert any(r["family"] == fam and r["cpu_baseline"] for r in recs), f"{fam}: no CPU baseline"
    svg = (d / f"{fam}.svg").read_text()
    assert "rotate(-90)" in svg and "higher is better" in svg, f"{fam}.svg: no y-axis title"
    assert meta["adapter"] in svg and meta["date"] in svg, f"{fam}.svg: no adapter or date"
print("ok   report: results.json valid,", len(recs), "records; 4 charts with titled axes")
PY
then
    echo "FAIL compare: report files"; failed=1
fi

echo "== bad input"
refused attention --dim 300 --heads 1 --seq 16 --cache 16
refused attention --only nosuchkernel
refused attention_backward --dim 300 --heads 1 --seq 16
refused attention --paged 0 --options-only
refused attention --softcap 0 --options-only
refused dot --n 0
refused dot --dtype f64
refused matmul --rows 0
refused search /nonexistent/corpus.npy
printf 'not an npy file' >"$tmp/bad.npy"
refused search "$tmp/bad.npy"
refused search --n 20000 --load "$tmp/bad.npy"
refused search --n 20000 --shards 0
refused search --n 1000 --dim 64 --index ivf --nlist 8 --nprobe 9
refused search --n 1000 --nprobe 4
refused embed --model /nonexistent/model "a sentence"
refused train_gpt2 --steps 1 --seq 0 --out "$tmp/gpt2-bad"
refused train_gpt2 --steps 0 --out "$tmp/gpt2-bad"
refused train_gpt2 --steps 1 --heads 5 --out "$tmp/gpt2-bad"
refused generate --model /nonexistent/model "def "
refused generate --model "$tmp/gpt2" --max-new 64 "def "
refused generate --model "$tmp/gpt2" "naïve ☃"
refused generate --model "$tmp/gpt2" --top-p 0 "def "
refused info --backend metal
refused info --no-such-flag

exit $failed
