#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and fuzzes the state
# stream reader for SECONDS (default 300). Exits non-zero on any crash.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-300}
build="$root/build/fuzz"
corpus="$root/build/fuzz-corpus/stream"

if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" "$root" -Dfuzz=true -Db_sanitize=address,undefined \
        -Db_lundef=false >/dev/null
fi
ninja -C "$build" fuzz_stream >"$build/../fuzz-build.log" 2>&1 || { tail -30 "$build/../fuzz-build.log"; exit 1; }
mkdir -p "$corpus"
[ -f "$corpus/seed" ] || FERRY_FUZZ_WRITE_SEED="$corpus/seed" "$build/fuzz_stream"
cd "$build"
./fuzz_stream -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
    "$corpus" > "$build/fuzz.log" 2>&1 || { tail -40 "$build/fuzz.log"; exit 1; }
grep -E 'stat::number_of_executed_units|stat::peak_rss' "$build/fuzz.log" | tr '\n' ' '
echo
