#!/bin/sh
# Times an older commit's ringxferd and ringxfer against this tree's, with
# the same bench code, runs interleaved (the order swaps every pair):
#
#   benches/before_after.sh REV BENCH [PAIRS]
#   RINGXFER_BENCH_SCALE=0.2 RINGXFER_BENCH_ROUNDS=3 benches/before_after.sh 30ce707 many_files 4
#     (many_files at its defaults takes about 11 minutes a run)
#   RINGXFER_BENCH_ROUNDS=3 benches/before_after.sh main~5 throughput
#
# The older commit is built in a scratch directory (its own target dir, kept
# in $RINGXFER_BEFORE_DIR, default /var/tmp/ringxfer-before-REV, to be reused);
# the bench runs it through RINGXFER_BENCH_BIN_DIR. Only what a bench runs as
# separate programs changes (the daemon, the CLI); in-process contenders (the
# embedded engine) are this tree's in both runs. Each run's full output is
# kept in $OUT (default: a new directory under /var/tmp), and its summary
# lines printed labelled "before" or "after".
set -eu
[ $# -ge 2 ] || { echo "usage: $0 REV BENCH [PAIRS]" >&2; exit 2; }
rev=$1 bench=$2 pairs=${3:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
sha=$(git -C "$here" rev-parse --short "$rev")
before=${RINGXFER_BEFORE_DIR:-/var/tmp/ringxfer-before-$sha}
out=${OUT:-$(mktemp -d /var/tmp/ringxfer-before-after-XXXXXX)}

if [ ! -x "$before/target/release/ringxferd" ]; then
    rm -rf "$before/src"
    mkdir -p "$before/src"
    git -C "$here" archive "$sha" | tar -x -C "$before/src"
    cargo build --release --locked --bins --manifest-path "$before/src/Cargo.toml" \
        --target-dir "$before/target"
fi
exe=$(cd "$here" && cargo bench --locked --no-run --bench "$bench" --message-format=json 2>/dev/null |
    grep '"kind":\["bench"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$exe" ] || { echo "$0: could not build the $bench bench" >&2; exit 1; }
cargo build --release --locked --bins --manifest-path "$here/Cargo.toml" >/dev/null 2>&1

run() { # label n
    if [ "$1" = before ]; then
        RINGXFER_BENCH_BIN_DIR="$before/target/release" "$exe" --bench >"$out/$1-$2.txt" 2>&1
    else
        "$exe" --bench >"$out/$1-$2.txt" 2>&1
    fi || { echo "$1 run $2 failed: see $out/$1-$2.txt" >&2; exit 1; }
    if [ "$1" = before ]; then what=$sha; else what="this tree"; fi
    echo "== $1 ($what) run $2"
    grep -E 'median|ratio|/ ' "$out/$1-$2.txt" | sed 's/^/   /'
}

i=1
while [ "$i" -le "$pairs" ]; do
    if [ $((i % 2)) -eq 1 ]; then run before "$i"; run after "$i"; else run after "$i"; run before "$i"; fi
    i=$((i + 1))
done
echo "full outputs in $out"
