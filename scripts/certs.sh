#!/usr/bin/env bash
# Makes a test CA and, for each host, the certificates ferry's mutual TLS
# reads from --tls-dir (QEMU's layout): ca-cert.pem, server-cert.pem,
# server-key.pem (used as destination), client-cert.pem, client-key.pem
# (used as source). Each host's certificates name the host; its server
# certificate also names localhost and 127.0.0.1 for single-machine tests.
# Usage: scripts/certs.sh OUTDIR HOST [HOST...]
#   OUTDIR/ca-cert.pem, OUTDIR/ca-key.pem (made once, reused)
#   OUTDIR/HOST/*.pem
# A second OUTDIR is a second, unrelated CA.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 OUTDIR HOST [HOST...]" >&2
    exit 2
fi
command -v certtool >/dev/null || "$(dirname "$0")/deps.sh" test
out=$1
shift
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

key() { certtool --generate-privkey --key-type=ecdsa --outfile "$1" 2>/dev/null; }

if [ ! -f "$out/ca-key.pem" ]; then
    key "$out/ca-key.pem"
    printf 'cn = "ferry test CA %s"\nca\ncert_signing_key\nexpiration_days = 3650\n' \
        "$(basename "$out")" >"$tmp/ca.info"
    certtool --generate-self-signed --load-privkey "$out/ca-key.pem" \
        --template "$tmp/ca.info" --outfile "$out/ca-cert.pem" 2>/dev/null
fi

sign() {   # sign DIR NAME KIND TEMPLATE-EXTRA
    key "$1/$2-key.pem"
    printf 'cn = "%s"\ndns_name = "%s"\n%s\nsigning_key\nexpiration_days = 365\n' \
        "$3" "$3" "$4" >"$tmp/$2.info"
    certtool --generate-certificate --load-privkey "$1/$2-key.pem" \
        --load-ca-certificate "$out/ca-cert.pem" --load-ca-privkey "$out/ca-key.pem" \
        --template "$tmp/$2.info" --outfile "$1/$2-cert.pem" 2>/dev/null
}

for host in "$@"; do
    dir="$out/$host"
    mkdir -p "$dir"
    cp "$out/ca-cert.pem" "$dir/ca-cert.pem"
    sign "$dir" server "$host" \
        "$(printf 'dns_name = "localhost"\nip_address = "127.0.0.1"\ntls_www_server\nencryption_key')"
    sign "$dir" client "$host" "tls_www_client"
    chmod 600 "$dir"/*-key.pem
done
echo "certs: CA in $out, hosts: $*"
