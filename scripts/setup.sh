#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for ec1: apt packages (QEMU 10 from
# bookworm-backports, busybox-static, kernel build tools), the release build of
# ec1, and the default guest kernel (cached under ~/.cache/ec1). Idempotent: a
# second run changes nothing and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
pkg_ok() { dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed; }

# QEMU 10 lives in bookworm-backports on Debian 12.
qemu_major() { qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\).*/\1/p'; }
if [ "$(qemu_major || true)" = "" ] || [ "$(qemu_major)" -lt 10 ]; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding bookworm-backports to apt's sources"
        echo 'deb http://deb.debian.org/debian bookworm-backports main' | $SUDO tee /etc/apt/sources.list.d/ec1-backports.list >/dev/null
    fi
    log "installing qemu-system-x86 from bookworm-backports"
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm-backports qemu-system-x86
fi

for p in busybox-static build-essential flex bison bc libelf-dev xz-utils linux-source-6.1 llvm-19 cpio e2fsprogs iproute2 python3-venv; do
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

log "building ec1 (release)"
cargo build --release --locked -q -p ec1

log "building the default guest kernel (cached; about 4 minutes the first time)"
./target/release/ec1 kernel build >/dev/null
log "ready: $(./target/release/ec1 kernel path)"
