#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and fuzzes each for
# SECONDS (default 300): the state stream reader and the virtqueue parser.
# Exits non-zero on any crash.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-300}
build="$root/build/fuzz"
targets="stream virtqueue"

if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" "$root" -Dfuzz=true -Db_sanitize=address,undefined \
        -Db_lundef=false >/dev/null
fi
for t in $targets; do
    corpus="$root/build/fuzz-corpus/$t"
    ninja -C "$build" "fuzz_$t" >"$build/../fuzz-build.log" 2>&1 || { tail -30 "$build/../fuzz-build.log"; exit 1; }
    mkdir -p "$corpus"
    [ -f "$corpus/seed" ] || FERRY_FUZZ_WRITE_SEED="$corpus/seed" "$build/fuzz_$t"
    (cd "$build" && ./"fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
        "$corpus" > "$build/fuzz-$t.log" 2>&1) || { tail -40 "$build/fuzz-$t.log"; exit 1; }
    echo -n "$t: "
    grep -E 'stat::number_of_executed_units|stat::peak_rss' "$build/fuzz-$t.log" | tr '\n' ' '
    echo
done
