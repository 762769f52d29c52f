#!/usr/bin/env bash
# The demo: installs what it needs (scripts/setup.sh), then runs the dialer's
# demo call: two phones in one process call each other over loopback with
# SRTP, each sends a tone and checks it hears the other's, and the call's
# codec, SRTP suite, jitter, loss and MOS estimate are printed. Exits 0 when
# audio flowed both ways.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

"$root/scripts/setup.sh"

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
cargo run --locked -p dialer -- --profile "$profile" demo "$@"
