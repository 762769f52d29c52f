#!/usr/bin/env bash
# The whole test suite, in the order CI runs it; stops at the first failure.
#
#   1. formatting          cargo fmt --check
#   2. lints               cargo clippy, warnings are errors
#   3. tests               cargo nextest (unit, scenario, property, driver, interop)
#   4. doc tests           cargo test --doc (nextest does not run them)
#   5. interop load        sipp's uac, 4000 calls at 400/s, on sip-uas (scripts/sipp-load.sh)
#   6. fuzz smoke runs     every cargo-fuzz target for FUZZ_SECONDS (default 60)
#   7. dependency policy   cargo deny: licenses, bans, sources (when installed)
#
# Installs what it needs first (scripts/setup.sh). On 2 cores a cold run takes
# about 10 minutes plus FUZZ_SECONDS per fuzz target.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

fuzz_seconds=${FUZZ_SECONDS:-60}
# A one-shot build gains nothing from incremental state, which is gigabytes.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
log_dir=$(mktemp -d)
current_step=""
timings=()

on_exit() {
    local status=$?
    if [[ $status -ne 0 && -n $current_step ]]; then
        printf '\ntest: FAILED in step "%s" (exit %d)\n' "$current_step" "$status" >&2
    fi
    rm -rf "$log_dir"
}
trap on_exit EXIT

# step NAME COMMAND...: runs one step and records how long it took. Under
# `set -e` a failing command ends the script; on_exit names the step.
step() {
    current_step=$1
    shift
    local start=$SECONDS
    printf '\n==> %s\n' "$current_step"
    "$@"
    local elapsed=$((SECONDS - start))
    timings+=("$(printf '%-28s %4d s' "$current_step" "$elapsed")")
    printf '<== %s: ok (%d s)\n' "$current_step" "$elapsed"
    current_step=""
}

run_nextest() {
    # nextest prints its summary on stderr; keep a copy to repeat it at the end.
    cargo nextest run --workspace --locked --no-fail-fast 2>&1 | tee "$log_dir/nextest.log"
}

fuzz_targets() {
    (cd fuzz && cargo fuzz list)
}

fuzz_build() {
    (cd fuzz && cargo fuzz build -s none)
}

fuzz_run() {
    local target=$1
    (cd fuzz && cargo fuzz run -s none "$target" -- \
        -max_total_time="$fuzz_seconds" -rss_limit_mb=2048)
}

run_fuzz_smoke() {
    if [[ ! -f fuzz/Cargo.toml ]]; then
        printf '\n==> fuzz: skipped, fuzz/Cargo.toml does not exist yet\n'
        timings+=("$(printf '%-28s %s' "fuzz" "skipped (no fuzz/)")")
        return
    fi
    local targets
    targets=$(fuzz_targets)
    if [[ -z $targets ]]; then
        printf '\n==> fuzz: skipped, cargo fuzz list found no target\n'
        timings+=("$(printf '%-28s %s' "fuzz" "skipped (no target)")")
        return
    fi
    step "fuzz build" fuzz_build
    local target
    while IFS= read -r target; do
        step "fuzz $target (${fuzz_seconds} s)" fuzz_run "$target"
    done <<<"$targets"
}

run_deny() {
    if cargo deny --version >/dev/null 2>&1; then
        # cargo deny reads the metadata of every platform's dependencies,
        # so fetch the ones the build did not need (Windows-only crates).
        step "cargo fetch" cargo fetch --locked --quiet
        step "cargo deny" cargo deny --offline check licenses bans sources
    else
        printf '\n==> cargo deny: skipped, cargo-deny is not installed (SETUP_DENY=1 scripts/setup.sh installs it; CI always runs it)\n'
        timings+=("$(printf '%-28s %s' "cargo deny" "skipped (not installed)")")
    fi
}

suite_start=$SECONDS

step "setup" "$root/scripts/setup.sh"
step "cargo fmt" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo nextest" run_nextest
step "doc tests" cargo test --doc --workspace --locked
step "interop: sipp load on sip-uas" "$root/scripts/sipp-load.sh"
run_fuzz_smoke
run_deny

printf '\n==> timings\n'
printf '  %s\n' "${timings[@]}"
printf '  %-28s %4d s\n' "total" "$((SECONDS - suite_start))"
# Repeat nextest's summary so the closing lines of the run give the test count.
summary=$(sed -E 's/\x1b\[[0-9;]*m//g' "$log_dir/nextest.log" | grep -E '^ *Summary \[' | tail -n 1 || true)
if [[ -n $summary ]]; then
    printf '\nnextest %s\n' "$(sed -E 's/^ +//' <<<"$summary")"
fi
printf 'test: all steps passed\n'
