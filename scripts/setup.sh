#!/usr/bin/env bash
# Installs what the build, the test suite and the demo need on a Debian 12
# machine that already has a Rust toolchain (rustup, cargo).
#
# Idempotent: every package and tool is checked first and installed only when
# it is missing, so a second run changes nothing and takes about a second.
#
#   system libraries   pkg-config libasound2-dev libopus-dev
#   real peers         sipp, kamailio, baresip, slapd, coturn, tshark, ...
#                      (interop tests launch them on loopback, see crates/testkit)
#   cargo tools        cargo-nextest, cargo-fuzz, cargo-deny (SETUP_DENY=0 skips it)
#                      (building cargo-deny takes about 7 minutes on 2 cores)
#
# Runs as root, or through sudo otherwise.
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

APT_PACKAGES=(
    # build: alsa-sys (under cpal) and audiopus_sys (system libopus)
    pkg-config libasound2-dev libopus-dev
    # real peers for the interop tests
    sip-tester kamailio kamailio-sqlite-modules kamailio-tls-modules kamailio-websocket-modules
    baresip-core slapd ldap-utils coturn tshark openssl sqlite3 iproute2
)
# Daemons that apt starts as system services on a host with systemd. The tests
# start their own instances on loopback; system ones would hold 5060, 389 and
# 3478.
PEER_SERVICES=(kamailio slapd coturn)

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

is_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

install_apt_packages() {
    command -v dpkg >/dev/null 2>&1 || die "dpkg not found: this script expects Debian 12"
    local missing=() package
    for package in "${APT_PACKAGES[@]}"; do
        is_installed "$package" || missing+=("$package")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        say "apt packages: all ${#APT_PACKAGES[@]} present"
        return
    fi
    say "apt packages missing: ${missing[*]}"
    say "running apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get update -o DPkg::Lock::Timeout=300
    say "running apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}"
    stop_peer_services
}

stop_peer_services() {
    # Only on a host that is running systemd; containers and CI images without
    # it never start these services.
    [[ -d /run/systemd/system ]] || return 0
    command -v systemctl >/dev/null 2>&1 || return 0
    local service
    for service in "${PEER_SERVICES[@]}"; do
        if systemctl is-enabled --quiet "$service" 2>/dev/null \
            || systemctl is-active --quiet "$service" 2>/dev/null; then
            say "disabling system service $service (tests run their own on loopback)"
            as_root systemctl disable --now "$service" || say "could not disable $service"
        fi
    done
}

check_rust() {
    command -v cargo >/dev/null 2>&1 \
        || die "cargo not found: install Rust first (https://rustup.rs), then run this again"
    say "rust: $(rustc --version)"
    if ! cargo fmt --version >/dev/null 2>&1; then
        add_component rustfmt
    fi
    if ! cargo clippy --version >/dev/null 2>&1; then
        add_component clippy
    fi
}

add_component() {
    command -v rustup >/dev/null 2>&1 || die "toolchain component $1 missing and rustup not found"
    say "adding toolchain component $1"
    rustup component add "$1"
}

# `cargo SUBCOMMAND` also finds tools in $CARGO_HOME/bin when that is not on PATH.
has_cargo_tool() {
    cargo "$1" --version >/dev/null 2>&1
}

install_cargo_tool() {
    local subcommand=$1
    if has_cargo_tool "$subcommand"; then
        say "cargo-$subcommand: present ($(cargo "$subcommand" --version 2>/dev/null | head -n 1))"
        return
    fi
    say "cargo-$subcommand: missing, running cargo install --locked cargo-$subcommand"
    cargo install --locked "cargo-$subcommand"
}

install_cargo_tools() {
    install_cargo_tool nextest
    install_cargo_tool fuzz
    if [[ ${SETUP_DENY:-1} == 1 ]]; then
        install_cargo_tool deny
    elif has_cargo_tool deny; then
        say "cargo-deny: present"
    else
        say "cargo-deny: not installed (SETUP_DENY=0 was given)"
    fi
}

main() {
    install_apt_packages
    check_rust
    install_cargo_tools
    say "done"
}

main "$@"
