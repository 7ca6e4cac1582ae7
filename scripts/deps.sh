#!/usr/bin/env bash
# Installs the Debian packages ferry needs, only those that are missing.
# Usage: scripts/deps.sh [build|test|bench|linux]   (default: build)
set -euo pipefail

build_pkgs=(gcc make meson ninja-build pkg-config libjansson-dev libmicrohttpd-dev libgnutls28-dev libseccomp-dev libcap-ng-dev
            libcurl4-openssl-dev libxxhash-dev libzstd-dev liblz4-dev liburing-dev
            libcmocka-dev python3)
test_pkgs=(python3-pytest gnutls-bin python3-xxhash clang libclang-rt-14-dev llvm iproute2 procps)
bench_pkgs=(qemu-system-x86 gnuplot-nox)
# test and bench overlap; duplicates are harmless to apt but checked once here
linux_pkgs=(cpio gzip xz-utils)

want=("${build_pkgs[@]}")
for set in "$@"; do
    case "$set" in
        build) ;;
        test) want+=("${test_pkgs[@]}") ;;
        bench) want+=("${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
        linux) want+=("${linux_pkgs[@]}") ;;
        *) echo "deps.sh: unknown set '$set'" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: need root to install: ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
