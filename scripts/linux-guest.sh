#!/usr/bin/env bash
# Builds ferry's Linux test guest from Debian 12's package archive only:
#   OUTDIR/vmlinuz     Debian's bzImage (linux-image-$KVER-unsigned)
#   OUTDIR/vmlinux     the uncompressed ELF kernel cut out of that bzImage (PVH-bootable)
#   OUTDIR/initrd.img  gzip'ed newc cpio: busybox-static, /init (scripts/linux-guest-init),
#                      the kernel's virtio modules with modules.dep
# Usage: scripts/linux-guest.sh [OUTDIR]      (default: build/guest under the repo root)
# Idempotent: does nothing when all outputs are newer than this script and the init file.
# Downloaded .debs are cached in OUTDIR/debs. Never installs anything into the host's /boot.
set -euo pipefail

# The preferred kernel: Debian 12's ABI name (package linux-image-$KVER-unsigned).
# Debian's archive serves only the current ABIs (bookworm-security moves on every few
# weeks, and a machine without bookworm-security sees only the point release's), so
# when this one is not served the newest Debian 12 6.1 ABI that apt knows is taken
# instead (kver_pick below): the tests read only the early boot, which any 6.1 prints.
KVER=6.1.0-56-amd64

VIRTIO_MODULES=(virtio virtio_ring virtio_pci virtio_pci_modern_dev virtio_pci_legacy_dev
                virtio_blk virtio_net net_failover failover)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT="$ROOT/scripts/linux-guest.sh"
INIT="$ROOT/scripts/linux-guest-init"
OUT=${1:-$ROOT/build/guest}

die() { echo "linux-guest.sh: error: $*" >&2; exit 1; }
say() { echo "linux-guest.sh: $*" >&2; }

[ -f "$INIT" ] || die "missing $INIT"
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)

# ---- idempotence -------------------------------------------------------------------
up_to_date=1
for f in vmlinuz vmlinux initrd.img; do
    if [ ! -s "$OUT/$f" ] || [ ! "$OUT/$f" -nt "$SCRIPT" ] || [ ! "$OUT/$f" -nt "$INIT" ]; then
        up_to_date=0
    fi
done
if [ "$up_to_date" = 1 ]; then
    exit 0
fi

# ---- tools -------------------------------------------------------------------------
deps_ran=0
need() {  # need TOOL PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$deps_ran" = 0 ]; then
        deps_ran=1
        say "$1 not found; running scripts/deps.sh linux"
        "$ROOT/scripts/deps.sh" linux || say "scripts/deps.sh linux failed"
        hash -r
        command -v "$1" >/dev/null 2>&1 && return 0
    fi
    die "'$1' is missing: install Debian package '$2' (apt-get install $2; it belongs in linux_pkgs of scripts/deps.sh)"
}
need apt-get apt
need dpkg-deb dpkg
need od coreutils
need dd coreutils
need cpio cpio
need gzip gzip
need python3 python3

# ---- downloads (cached in OUT/debs) ------------------------------------------------
DEBS="$OUT/debs"
mkdir -p "$DEBS"

# shellcheck disable=SC2012  # .deb names from apt-get download: no odd characters
fetch_deb() {  # fetch_deb PACKAGE -> prints path of the cached .deb
    local pkg=$1 deb
    deb=$(ls -t "$DEBS/${pkg}"_*_amd64.deb 2>/dev/null | head -n1 || true)
    if [ -n "$deb" ] && dpkg-deb --info "$deb" >/dev/null 2>&1; then
        echo "$deb"; return 0
    fi
    say "downloading $pkg"
    if ! (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2); then
        say "download of $pkg failed; running apt-get update and retrying"
        [ "$(id -u)" -eq 0 ] || die "apt-get update needs root; run it as root, then retry"
        apt-get update -q >&2 || die "apt-get update failed (is the Debian archive reachable?)"
        (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2) ||
            die "cannot download $pkg from the Debian archive. If the kernel ABI $KVER is no longer served, pick the current one with: apt-cache search linux-image-6.1.0 | grep amd64-unsigned, and set KVER in $SCRIPT"
    fi
    deb=$(ls -t "$DEBS/${pkg}"_*_amd64.deb 2>/dev/null | head -n1 || true)
    [ -n "$deb" ] || die "apt-get download $pkg succeeded but no ${pkg}_*_amd64.deb is in $DEBS"
    dpkg-deb --info "$deb" >/dev/null 2>&1 || die "$deb is not a valid .deb (delete it and retry)"
    echo "$deb"
}

# Newest 6.1.0-N-amd64 ABI among the -unsigned kernels apt can download, or nothing.
kver_newest() {
    apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' 2>/dev/null |
        awk '{print $1}' | sed 's/^linux-image-//; s/-unsigned$//' | sort -V | tail -n1
}

# The pinned ABI if cached or served, else the newest served one (apt lists refreshed
# once, as root, when neither is there).
kver_pick() {
    local newest
    ls "$DEBS/linux-image-$KVER-unsigned"_*_amd64.deb >/dev/null 2>&1 && return 0
    apt-cache show "linux-image-$KVER-unsigned" >/dev/null 2>&1 && return 0
    newest=$(kver_newest)
    if [ -z "$newest" ] && [ "$(id -u)" -eq 0 ]; then
        apt-get update -q >&2 || die "apt-get update failed (is the Debian archive reachable?)"
        apt-cache show "linux-image-$KVER-unsigned" >/dev/null 2>&1 && return 0
        newest=$(kver_newest)
    fi
    [ -n "$newest" ] || die "no linux-image-6.1.0-*-amd64-unsigned in the Debian archive apt sees"
    say "linux-image-$KVER-unsigned is not served here; using $newest instead"
    KVER=$newest
}

kver_pick
KPKG="linux-image-$KVER-unsigned"   # the -unsigned package has the plain (not signed) bzImage
KDEB=$(fetch_deb "$KPKG")
BDEB=$(fetch_deb busybox-static)
say "kernel:  $(basename "$KDEB")"
say "busybox: $(basename "$BDEB")"

# ---- unpack into a temporary dir under OUT -----------------------------------------
TMP=$(mktemp -d "$OUT/tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
dpkg-deb -x "$KDEB" "$TMP/k" || die "dpkg-deb -x $KDEB failed"
dpkg-deb -x "$BDEB" "$TMP/bb" || die "dpkg-deb -x $BDEB failed"
BZ="$TMP/k/boot/vmlinuz-$KVER"
MODSRC="$TMP/k/lib/modules/$KVER"
BUSYBOX="$TMP/bb/bin/busybox"
[ -f "$BZ" ] || die "$KPKG has no boot/vmlinuz-$KVER"
[ -d "$MODSRC" ] || die "$KPKG has no lib/modules/$KVER"
[ -x "$BUSYBOX" ] || die "busybox-static has no bin/busybox"

# ---- vmlinux: cut the payload out of the bzImage by its setup header ----------------
u8()  { od -An -v -t u1 -j "$(($2))" -N 1 "$1" | tr -d ' \n'; }
u32() { od -An -v -t u4 -j "$(($2))" -N 4 "$1" | tr -d ' \n'; }
hex() { od -An -v -t x1 -j "$(($2))" -N "$3" "$1" | tr -d ' \n'; }

[ "$(hex "$BZ" 0x1fe 2)" = 55aa ] || die "$BZ: no boot sector signature 0x55AA at 0x1fe"
[ "$(hex "$BZ" 0x202 4)" = 48647253 ] || die "$BZ: no 'HdrS' setup header magic at 0x202"
setup_sects=$(u8 "$BZ" 0x1f1)
[ "$setup_sects" -eq 0 ] && setup_sects=4
pm_start=$(( (setup_sects + 1) * 512 ))
payload_offset=$(u32 "$BZ" 0x248)
payload_length=$(u32 "$BZ" 0x24c)
bzsize=$(stat -c %s "$BZ")
start=$(( pm_start + payload_offset ))
if [ "$payload_length" -le 8 ] || [ $(( start + payload_length )) -gt "$bzsize" ]; then
    die "$BZ: bad payload (setup_sects=$setup_sects offset=$payload_offset length=$payload_length size=$bzsize)"
fi
dd if="$BZ" of="$TMP/payload" bs=1M iflag=skip_bytes,count_bytes \
   skip="$start" count="$payload_length" status=none
# Every kernel compressor except gzip is followed by a 4-byte little-endian size
# (scripts/Makefile.lib size_append); gzip carries the same size in its trailer.
expect=$(u32 "$TMP/payload" $(( payload_length - 4 )))
magic=$(hex "$TMP/payload" 0 6)
strip=1
case "$magic" in
    1f8b*)         comp=gzip;  tool=gzip;  pkg=gzip;      strip=0 ;;
    fd377a585a00)  comp=xz;    tool=xz;    pkg=xz-utils ;;
    28b52ffd*)     comp=zstd;  tool=zstd;  pkg=zstd ;;
    5d0000*)       comp=lzma;  tool=xz;    pkg=xz-utils ;;
    02214c18*)     comp=lz4;   tool=lz4;   pkg=lz4 ;;
    425a68*)       comp=bzip2; tool=bzip2; pkg=bzip2 ;;
    894c5a4f*)     comp=lzo;   tool=lzop;  pkg=lzop ;;
    *) die "$BZ: unknown payload compression (first bytes $magic)" ;;
esac
need "$tool" "$pkg"
say "bzImage: setup_sects=$setup_sects payload at $start, $payload_length bytes, $comp"
if [ "$strip" = 1 ]; then
    truncate -s $(( payload_length - 4 )) "$TMP/payload"
fi
case "$comp" in
    gzip)  gzip -dc <"$TMP/payload" ;;
    xz)    xz -dc --single-stream <"$TMP/payload" ;;
    zstd)  zstd -dc -q <"$TMP/payload" ;;
    lzma)  xz -dc --format=lzma <"$TMP/payload" ;;
    lz4)   lz4 -dc <"$TMP/payload" ;;
    bzip2) bzip2 -dc <"$TMP/payload" ;;
    lzo)   lzop -dc <"$TMP/payload" ;;
esac >"$TMP/vmlinux" || die "$comp decompression of the bzImage payload failed"
got=$(stat -c %s "$TMP/vmlinux")
[ "$got" -eq "$expect" ] || die "decompressed kernel is $got bytes, the bzImage says $expect"

# ELF64 x86-64 with a PVH entry note (name "Xen", type 18 = XEN_ELFNOTE_PHYS32_ENTRY).
python3 - "$TMP/vmlinux" <<'EOF' || die "vmlinux check failed"
import struct, sys
path = sys.argv[1]
d = open(path, "rb").read()
def fail(msg):
    sys.exit("linux-guest.sh: error: vmlinux: " + msg)
if d[:4] != b"\x7fELF" or d[4] != 2 or d[5] != 1:
    fail("not a little-endian ELF64 file")
e_type, e_machine = struct.unpack_from("<HH", d, 16)
if e_machine != 62:
    fail("e_machine %d is not x86-64 (62)" % e_machine)
e_entry, e_phoff = struct.unpack_from("<QQ", d, 24)
e_phentsize, e_phnum = struct.unpack_from("<HH", d, 54)
pvh = None
for i in range(e_phnum):
    p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", d, e_phoff + i * e_phentsize)
    if p_type != 4:          # PT_NOTE
        continue
    off, end = p_offset, p_offset + p_filesz
    while off + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from("<III", d, off)
        name = d[off + 12: off + 12 + namesz].rstrip(b"\0")
        doff = off + 12 + ((namesz + 3) & ~3)
        desc = d[doff: doff + descsz]
        if name == b"Xen" and ntype == 18:
            pvh = int.from_bytes(desc, "little")
        off = doff + ((descsz + 3) & ~3)
if pvh is None:
    fail("no PVH note (Xen, type 18 XEN_ELFNOTE_PHYS32_ENTRY)")
print("linux-guest.sh: vmlinux: ELF64 x86-64, e_entry 0x%x, PVH entry (XEN_ELFNOTE_PHYS32_ENTRY) 0x%x"
      % (e_entry, pvh), file=sys.stderr)
EOF

# ---- initramfs ---------------------------------------------------------------------
R="$TMP/root"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,lib/modules}
cp "$BUSYBOX" "$R/bin/busybox"
chmod 755 "$R/bin/busybox"
"$R/bin/busybox" --list-full >"$TMP/applets" || die "cannot list busybox applets"
while read -r a; do
    case "$a" in ""|*/busybox|linuxrc) continue ;; esac
    [ -e "$R/$a" ] || ln -s /bin/busybox "$R/$a"
done <"$TMP/applets"
install -m 755 "$INIT" "$R/init"
if [ "$(id -u)" -eq 0 ]; then
    mknod -m 600 "$R/dev/console" c 5 1
    mknod -m 666 "$R/dev/null" c 1 3
else
    say "not root: no /dev/console node in the initramfs (the kernel warns; /init mounts devtmpfs)"
fi
echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"

# modules: dependencies from depmod run over the package's whole modules tree
"$BUSYBOX" depmod -b "$TMP/k" "$KVER" || die "depmod over $KPKG's modules failed"
python3 - "$MODSRC/modules.dep" "${VIRTIO_MODULES[@]}" >"$TMP/modlist" <<'EOF' || die "module selection failed"
import os, sys
dep = {}
for line in open(sys.argv[1]):
    k, _, v = line.partition(":")
    dep[k.strip()] = v.split()
byname = {os.path.basename(k).split(".ko")[0]: k for k in dep}
want, todo = set(), [byname[m] for m in sys.argv[2:] if m in byname]
while todo:
    k = todo.pop()
    if k not in want:
        want.add(k)
        todo.extend(dep.get(k, []))
print("\n".join(sorted(want)))
EOF
MODDST="$R/lib/modules/$KVER"
mkdir -p "$MODDST"
while read -r m; do
    [ -n "$m" ] || continue
    mkdir -p "$MODDST/$(dirname "$m")"
    cp "$MODSRC/$m" "$MODDST/$m"
done <"$TMP/modlist"
cp "$MODSRC/modules.builtin" "$MODSRC/modules.builtin.modinfo" "$MODDST/"
grep -Fx -f "$TMP/modlist" "$MODSRC/modules.order" >"$MODDST/modules.order" || true
"$BUSYBOX" depmod -b "$R" "$KVER" || die "depmod over the initramfs modules failed"
say "modules: $(sed 's@.*/@@; s@\.ko.*@@' "$TMP/modlist" | tr '\n' ' ')"

(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) |
    gzip -9 -n >"$TMP/initrd.img" || die "cpio/gzip of the initramfs failed"

# ---- install outputs (newer than script and init by construction) -------------------
cp "$BZ" "$TMP/vmlinuz"
for f in vmlinuz vmlinux initrd.img; do
    mv -f "$TMP/$f" "$OUT/$f"
    touch "$OUT/$f"
done
say "done: $OUT/vmlinuz $OUT/vmlinux $OUT/initrd.img (kernel $KVER)"
