#!/usr/bin/env bash
# The demo: boot a 2-vCPU test guest running the memory dirtier, show its
# heartbeat, pause and resume it through the API, then shut it down.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ferry="$root/build/ferry"
guest="$root/build/guest/testguest"
work=$(mktemp -d /tmp/ferry-demo.XXXXXX)
sock="$work/api.sock"
console="$work/console.log"
pid=

cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
wait_for() {   # wait_for PATTERN SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        grep -qE "$1" "$console" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "demo: timed out waiting for '$1'" >&2
    cat "$console" >&2
    return 1
}

[ -e /dev/kvm ] || { echo "demo: /dev/kvm is missing: ferry needs KVM" >&2; exit 1; }
step "booting a 2-vCPU, 1 GiB test guest with a 128 MiB memory dirtier (2000 pages/s)"
"$ferry" run --kernel "$guest" --cpus 2 --memory 1024 \
    --cmdline "dirtier.mib=128 dirtier.rate=2000" \
    --api-socket "$sock" --console "file:$console" </dev/null &
pid=$!
wait_for '^VERIFY ok' 20
head -n 4 "$console"
tail -n 3 "$console"

step "status through the API"
"$ferry" status --api-socket "$sock"

step "pause: the heartbeat stops"
"$ferry" pause --api-socket "$sock"
before=$(grep -c '^HB' "$console")
sleep 1
after=$(grep -c '^HB' "$console")
echo "heartbeats during 1 s of pause: $((after - before))"
"$ferry" status --api-socket "$sock" | grep '"state"'

step "resume: the heartbeat continues"
"$ferry" resume --api-socket "$sock"
sleep 1
tail -n 3 "$console"

step "shutdown"
"$ferry" shutdown --api-socket "$sock"
wait "$pid"
rc=$?
pid=
echo "ferry exited with $rc"
grep -q 'VERIFY FAIL' "$console" && { echo "demo: guest memory check FAILED"; exit 1; }
echo "demo: OK (guest memory verified $(grep -c '^VERIFY ok' "$console") times)"
