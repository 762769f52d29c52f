#!/usr/bin/env bash
# The demo: installs what it needs (scripts/setup.sh), then shows the stack at
# work.
#
# For now that is sip-core's message layer: `sip-lint` parses every valid
# message of the SIP test corpus and reports what it found. Once the CLI dialer
# (`dialer`, examples/) can place a call, a demo call against a local PBX
# replaces this.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

"$root/scripts/setup.sh"

shopt -s nullglob
messages=(crates/sip-core/tests/data/valid/*.sip)
if [[ ${#messages[@]} -eq 0 ]]; then
    echo "demo: no messages in crates/sip-core/tests/data/valid/" >&2
    exit 1
fi

echo "demo: sip-lint on ${#messages[@]} messages from crates/sip-core/tests/data/valid/"
cargo run --locked --release -p sip-core --example sip-lint -- "${messages[@]}"
