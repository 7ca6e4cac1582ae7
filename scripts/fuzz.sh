#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and fuzzes each for
# SECONDS (default 300): the state stream reader, the page delta decoder,
# the lz4/zstd decoders, the virtqueue parser, the migration destination's
# receive loop.
# Usage: scripts/fuzz.sh [SECONDS [TARGET...]] with
# TARGET one of stream, delta, decompress, virtqueue, dest (default: all). Prints one line per
# target; exits non-zero if any target crashed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(stream delta decompress virtqueue dest)
build="$root/build/fuzz"

if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" "$root" -Dfuzz=true -Db_sanitize=address,undefined \
        -Db_lundef=false >/dev/null
fi
ninja -C "$build" "${targets[@]/#/fuzz_}" >"$build/../fuzz-build.log" 2>&1 ||
    { tail -30 "$build/../fuzz-build.log"; exit 1; }

rc=0
for t in "${targets[@]}"; do
    corpus="$root/build/fuzz-corpus/$t"
    log="$build/fuzz-$t.log"
    mkdir -p "$corpus"
    if [ -z "$(ls -A "$corpus")" ]; then
        FERRY_FUZZ_WRITE_SEED="$corpus/seed" "$build/fuzz_$t"
        # recorded real streams (tests/fuzz/record_migration.py), where a target has them
        [ ! -d "$root/tests/fuzz/seeds/$t" ] || cp "$root/tests/fuzz/seeds/$t"/* "$corpus/"
    fi
    if (cd "$build" && "./fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=2048 \
            -print_final_stats=1 "$corpus" >"$log" 2>&1); then
        echo "fuzz $t stats: $(grep -E 'stat::number_of_executed_units|stat::peak_rss' "$log" | tr '\n' ' ')"
    else
        echo "fuzz $t: FAILED"; tail -40 "$log"; rc=1
    fi
done
exit $rc
