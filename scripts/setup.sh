#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for ec1: apt packages (QEMU 10 for x86_64 and
# aarch64 guests from bookworm-backports, busybox-static, kernel build tools and the
# arm64 cross compiler), rustup's aarch64 musl target (for the arm64 guest agent), the
# release build of ec1, and the default guest kernels of both architectures with the
# arm64 busybox (cached under ~/.cache/ec1). Idempotent: a second run changes nothing
# and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
pkg_ok() { dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed; }

# The URI of the Debian archive that this machine's apt sources use for bookworm
# (deb822 `.sources` files or one-line `sources.list` entries), so that no package
# host is named here.
debian_mirror() {
    local f
    {
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -r "$f" ] || continue
            # deb822: one stanza per paragraph; the URI of a stanza whose suites include bookworm.
            awk 'BEGIN { RS = "" }
                 /(^|\n)Suites:[^\n]*[ \t]bookworm([ \t\n]|$)/ {
                     if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { u = substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", u); print u }
                 }' "$f"
        done
        cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '$1 == "deb" && / bookworm / { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }'
    } | head -n1
    return 0
}

# QEMU 10 lives in bookworm-backports on Debian 12.
qemu_major() { "$1" --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\).*/\1/p'; }
qemu_ok() { local m; m=$(qemu_major "$1" || true); [ -n "$m" ] && [ "$m" -ge 10 ]; }
if ! qemu_ok qemu-system-x86_64 || ! qemu_ok qemu-system-aarch64; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding bookworm-backports to apt's sources"
        # The mirror is the one this machine's own sources already use for bookworm.
        mirror=$(debian_mirror)
        if [ -z "$mirror" ]; then
            log "no Debian bookworm source found in /etc/apt: add bookworm-backports to apt's sources by hand"
            exit 1
        fi
        echo "deb $mirror bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/ec1-backports.list >/dev/null
    fi
    log "installing qemu-system-x86 and qemu-system-arm from bookworm-backports"
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm-backports qemu-system-x86 qemu-system-arm
fi

for p in busybox-static build-essential flex bison bc libelf-dev xz-utils linux-source-6.1 gcc-aarch64-linux-gnu llvm-19 cpio e2fsprogs iproute2 python3-venv debootstrap qemu-utils; do
    pkg_ok "$p" || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]}"
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null; then
    log "cargo is missing: install the Rust toolchain (rustup) first"
    exit 1
fi

# The arm64 guest agent is a static musl binary linked by rustc's own lld.
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-musl; then
    log "adding rustup's aarch64-unknown-linux-musl target (the arm64 guest agent)"
    rustup target add aarch64-unknown-linux-musl
fi

log "building ec1 (release)"
cargo build --release --locked -q -p ec1

log "building the default guest kernels (cached; about 4 minutes each the first time)"
./target/release/ec1 kernel build >/dev/null
./target/release/ec1 kernel build --arch aarch64 >/dev/null
log "ready: $(./target/release/ec1 kernel path) and $(./target/release/ec1 kernel path --arch aarch64)"
