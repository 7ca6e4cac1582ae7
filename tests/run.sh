#!/usr/bin/env bash
# Runs every test: cmocka unit tests (ASan/UBSan build), then the KVM
# integration tests. Ends with the line "N passed, N failed".
# FERRY_ONLY=unit|integration picks one half; PYTEST_ARGS passes options on.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
asan="$root/build/asan"
passed=0
failed=0

run_unit() {
    local t out p f rc
    for t in "$asan"/test_*; do
        [ -x "$t" ] && [ -f "$t" ] || continue
        out=$(CMOCKA_MESSAGE_OUTPUT=TAP "$t" 2>&1)
        rc=$?
        p=$(grep -c '^ok ' <<<"$out")
        f=$(grep -c '^not ok ' <<<"$out")
        if [ "$f" -eq 0 ] && { [ "$p" -eq 0 ] || [ "$rc" -ne 0 ]; }; then
            f=1   # nothing reported, or a sanitizer failed the binary at exit
            p=$((p > 0 ? p - 1 : 0))
        fi
        [ "$f" -gt 0 ] && printf '%s\n' "$out" | grep -v '^ok '
        echo "unit $(basename "$t"): $p passed, $f failed"
        passed=$((passed + p))
        failed=$((failed + f))
    done
}

run_integration() {
    local xml="$root/build/pytest-results.xml" counts
    if [ ! -e /dev/kvm ]; then
        echo "integration: /dev/kvm is missing; these tests need real KVM" >&2
        failed=$((failed + 1))
        return
    fi
    (cd "$root/tests/integration" && /usr/bin/python3 -m pytest -p no:cacheprovider \
        -q -rfE --junitxml="$xml" ${PYTEST_ARGS:-} .)
    counts=$(/usr/bin/python3 - "$xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    r = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 1"); sys.exit()
s = r if r.tag == "testsuite" else r.find("testsuite")
t, f, e, k = (int(s.get(x, 0)) for x in ("tests", "failures", "errors", "skipped"))
# A skipped integration test counts as failed: nothing here may skip silently.
print(t - f - e - k, f + e + k if t else 1)
PY
)
    passed=$((passed + ${counts% *}))
    failed=$((failed + ${counts#* }))
}

# Every fuzz target for a short bounded time, FUZZ_SECONDS (30) split among
# them (make fuzz runs each longer); each target counts as one test.
run_fuzz() {
    local t targets=(stream delta decompress virtqueue dest) secs
    secs=$(( ${FUZZ_SECONDS:-30} / ${#targets[@]} ))
    [ "$secs" -ge 1 ] || secs=1
    for t in "${targets[@]}"; do
        if "$root/scripts/fuzz.sh" "$secs" "$t"; then
            echo "fuzz $t: 1 passed, 0 failed"; passed=$((passed + 1))
        else
            echo "fuzz $t: 0 passed, 1 failed"; failed=$((failed + 1))
        fi
    done
}

case "${FERRY_ONLY:-all}" in
    unit) run_unit ;;
    fuzz) run_fuzz ;;
    integration) run_integration ;;
    *) run_unit; run_fuzz; run_integration ;;
esac
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
