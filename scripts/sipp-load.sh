#!/usr/bin/env bash
# Load run against real sipp on 127.0.0.1: sipp's built-in `uac` places CALLS
# calls at RATE calls/s on sip-uas over UDP and over TCP (zero failed calls
# required), then on sipp's own built-in `uas` over UDP. Prints the CPU seconds
# each server spent (utime+stime from /proc/PID/stat) and their ratio.
#
#   scripts/sipp-load.sh            # CALLS=4000 RATE=400
# Exit status: 0 when every call of every run succeeded.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
calls=${CALLS:-4000}
rate=${RATE:-400}
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

command -v sipp >/dev/null || { echo "sipp-load: sipp is not installed (apt-get install sip-tester)" >&2; exit 2; }
cargo build --locked --release -q -p sip-tokio --example sip-uas
uas_bin=${CARGO_TARGET_DIR:-target}/release/examples/sip-uas

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# utime + stime of a live process, in seconds.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
wait_udp() { for _ in $(seq 50); do ss -lun | grep -q ":$1 " && return 0; sleep 0.1; done; return 1; }
wait_tcp() { for _ in $(seq 50); do ss -ltn | grep -q ":$1 " && return 0; sleep 0.1; done; return 1; }
bound=$(( calls / rate + 60 ))

# run_uac LABEL PORT SIPP_TRANSPORT: sipp uac against 127.0.0.1:PORT; prints successful/failed.
run_uac() {
    local label=$1 port=$2 t=$3 stat="$work/$1.csv"
    (cd "$work" && timeout "$bound" sipp -sn uac "127.0.0.1:$port" -i 127.0.0.1 -p "$(free_port)" -t "$t" \
        -m "$calls" -r "$rate" -l 2000 -nostdin -timeout "${bound}s" -timeout_error \
        -trace_stat -stf "$stat" -fd 1 >"$work/$label.out" 2>&1) || true
    python3 - "$stat" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
header, last = rows[0], rows[-1]
print(last[header.index('SuccessfulCall(C)')], last[header.index('FailedCall(C)')])
PY
}

report() { printf '%-34s %s\n' "$1" "$2"; }
status=0

for t in u1 t1; do
    port=$(free_port)
    kind=$([ "$t" = u1 ] && echo udp || echo tcp)
    "$uas_bin" --listen "127.0.0.1:$port" --transport "$kind" --duration "$bound" >"$work/uas-$kind.log" 2>&1 &
    uas=$!; pids+=("$uas")
    if [ "$kind" = udp ]; then wait_udp "$port"; else wait_tcp "$port"; fi
    read -r ok failed < <(run_uac "sip-uas-$kind" "$port" "$t")
    cpu=$(cpu_of "$uas")
    kill "$uas" 2>/dev/null || true; wait "$uas" 2>/dev/null || true
    report "sip-uas over ${kind^^}:" "$ok successful, $failed failed calls; server CPU ${cpu} s"
    [ "$kind" = udp ] && uas_cpu=$cpu
    if [ "$ok" != "$calls" ] || [ "$failed" != 0 ]; then status=1; fi
done

port=$(free_port)
(cd "$work" && exec timeout "$bound" sipp -sn uas -i 127.0.0.1 -p "$port" -nostdin >"$work/sipp-uas.out" 2>&1) &
sipp_uas=$!; pids+=("$sipp_uas")
wait_udp "$port"
sipp_pid=$(pgrep -P "$sipp_uas" -x sipp || echo "$sipp_uas")
read -r ok failed < <(run_uac "sipp-uas-udp" "$port" u1)
sipp_cpu=$(cpu_of "$sipp_pid")
report "sipp's built-in uas over UDP:" "$ok successful, $failed failed calls; server CPU ${sipp_cpu} s"
python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'CPU ratio sip-uas / sipp uas (UDP, $calls calls at $rate/s): {a/b:.2f}' if b else 'CPU ratio: sipp used no measurable CPU')" "$uas_cpu" "$sipp_cpu"
exit $status
