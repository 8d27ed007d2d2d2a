#!/usr/bin/env bash
# Installs everything lb needs on a fresh Debian machine, idempotently.
# Fast when everything is present: each step checks before it acts.
# Called by `cargo xtask setup` (and so by `cargo xtask test|demo`).
set -euo pipefail

BPF_TOOLCHAIN="${LB_BPF_TOOLCHAIN:-lb-bpf}"
BPF_LINKER_VERSION="${LB_BPF_LINKER_VERSION:-0.13.0}"
LLVM_PREFIX=/usr/lib/llvm-22

log() { printf '[setup] %s\n' "$*" >&2; }

# Debian packages: the kernel-side Rust toolchain (rustc-web 1.96 with LLVM 22),
# LLVM 22 for bpf-linker, the tools the tests drive (the live-view tests load
# the status page in chromium and w3m, scrape with prometheus and run
# `lb top` in tmux), and what `cargo xtask bench` compares against and loads with
# (haproxy, wrk, and clang-22 for Katran's program). A cluster node announces
# its VIPs through BIRD 2 (bird2), which lb starts itself; the cluster tests'
# upstream router runs FRR (frr).
PKGS=(rustc-web cargo-web rust-web-src rust-web-clippy llvm-22-dev libpolly-22-dev
      iproute2 ethtool iperf3 curl nftables haproxy wrk clang-22
      chromium w3m prometheus tmux bird2 frr)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The tests start the prometheus they need in a namespace of their own;
  # a policy-rc.d that says no keeps the package from also starting its
  # system service on the host's port 9090. Removed again, also on failure.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    trap 'rm -f "$policy"' EXIT
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian toolchain linked into rustup so `cargo +lb-bpf` finds it.
if ! rustup toolchain list | grep -q "^${BPF_TOOLCHAIN}"; then
  log "linking rustup toolchain ${BPF_TOOLCHAIN} -> /usr"
  rustup toolchain link "${BPF_TOOLCHAIN}" /usr
fi

# bpf-linker built against Debian's LLVM 22 (its prebuilt LLVM cannot be downloaded here).
if ! command -v bpf-linker >/dev/null 2>&1 || ! bpf-linker --version 2>/dev/null | grep -q "${BPF_LINKER_VERSION}"; then
  log "building bpf-linker ${BPF_LINKER_VERSION} against LLVM 22 (a few minutes)"
  LLVM_PREFIX="${LLVM_PREFIX}" cargo install --locked bpf-linker --version "${BPF_LINKER_VERSION}" \
    --no-default-features --features llvm-22
fi
log "ok: toolchain ${BPF_TOOLCHAIN}, $(bpf-linker --version 2>/dev/null | head -1)"
