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
    local t out p f
    for t in "$asan"/test_*; do
        [ -x "$t" ] && [ -f "$t" ] || continue
        out=$(CMOCKA_MESSAGE_OUTPUT=TAP "$t" 2>&1)
        p=$(grep -c '^ok ' <<<"$out")
        f=$(grep -c '^not ok ' <<<"$out")
        if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
            f=1   # a test binary that reports nothing has failed
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

case "${FERRY_ONLY:-all}" in
    unit) run_unit ;;
    integration) run_integration ;;
    *) run_unit; run_integration ;;
esac
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
