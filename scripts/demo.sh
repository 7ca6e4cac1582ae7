#!/usr/bin/env bash
# The demo: boot a 2-vCPU test guest running the memory dirtier, show its
# heartbeat, pause and resume it through the API, live-migrate it to a second
# ferry process, check its memory there, and shut it down.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ferry="$root/build/ferry"
guest="$root/build/guest/testguest"
work=$(mktemp -d /tmp/ferry-demo.XXXXXX)
sock="$work/api.sock"
console="$work/console.log"
dsock="$work/dest.sock"
dconsole="$work/dest.log"
pid=
dpid=

cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    [ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
wait_for() {   # wait_for PATTERN SECONDS [FILE]
    local i file=${3:-$console}
    for ((i = 0; i < $2 * 10; i++)); do
        grep -qE "$1" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "demo: timed out waiting for '$1'" >&2
    cat "$file" >&2
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

step "status through the API (first lines)"
"$ferry" status --api-socket "$sock" | head -n 6

step "pause: the heartbeat stops"
"$ferry" pause --api-socket "$sock"
before=$(grep -c '^HB' "$console")
sleep 1
after=$(grep -c '^HB' "$console")
echo "heartbeats during 1 s of pause: $((after - before))"
"$ferry" status --api-socket "$sock" | grep -m1 '"state"'

step "resume: the heartbeat continues"
"$ferry" resume --api-socket "$sock"
sleep 1
tail -n 3 "$console"

step "live migration to a second ferry process (127.0.0.1, downtime limit 300 ms)"
port=$(( (RANDOM % 20000) + 30000 ))
"$ferry" run --incoming "tcp:127.0.0.1:$port" --api-socket "$dsock" \
    --console "file:$dconsole" </dev/null 2>"$work/dest.err" &
dpid=$!
for ((i = 0; i < 50; i++)); do [ -S "$dsock" ] && break; sleep 0.1; done
"$ferry" migrate --api-socket "$sock" "tcp:127.0.0.1:$port" --wait --json > "$work/report.json"
wait "$pid" || true
pid=
/usr/bin/python3 - "$work/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
d = r["downtime"]
print(f"state {r['state']}: {len(r['rounds'])} rounds, {r['bytes'] / 2**20:.1f} MiB on the wire, "
      f"total {r['total_ms']} ms")
print(f"downtime {d['total_ms']:.1f} ms (limit {r['params']['downtime_limit_ms']} ms): "
      f"pause {d['pause_ms']:.1f}, last pages {d['final_pages_ms']:.1f} ({d['final_pages']} pages), "
      f"state {d['state_ms']:.1f}, destination apply {d['dest_apply_ms']:.1f}")
for x in r["rounds"]:
    print(f"  round {x['round']}: {x['pages']} pages in {x['duration_ms']} ms, "
          f"{x['dirty_pages']} dirty after it ({x['dirty_rate_pps']} pages/s)")
PY
echo "last heartbeat on the source:       $(grep '^HB' "$console" | tail -n 1)"
wait_for '^VERIFY ok' 20 "$dconsole"
echo "first heartbeat on the destination: $(grep '^HB' "$dconsole" | head -n 1)"
grep '^VERIFY' "$dconsole" | head -n 1

step "shutdown"
"$ferry" shutdown --api-socket "$dsock"
wait "$dpid"
rc=$?
dpid=
echo "ferry exited with $rc"
grep -q 'VERIFY FAIL' "$console" "$dconsole" && { echo "demo: guest memory check FAILED"; exit 1; }
echo "demo: OK (guest memory verified $(cat "$console" "$dconsole" | grep -c '^VERIFY ok') times, before and after the migration)"
