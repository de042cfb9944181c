#!/usr/bin/env bash
# What dnstap costs the query path, worst case: every query is blocked (so
# every reply is tapped), dnsperf for DURATION seconds against the same
# binary without [dnstap], then with [dnstap] streaming to fstrm_capture
# over a Unix socket. Prints qps, the server's CPU seconds and dnstap's
# sent/dropped counters.
#
#   cargo build --release && benches/dnstap.sh
#
# Needs dnsperf and fstrm_capture (installed when missing, as root).
# Environment: DURATION=10 CLIENTS=10 OUTSTANDING=50 WORKERS=1 QUEUE=65536
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/benches/lib.sh"
DURATION=${DURATION:-10} CLIENTS=${CLIENTS:-10} OUTSTANDING=${OUTSTANDING:-50}
WORKERS=${WORKERS:-1} QUEUE=${QUEUE:-65536}
bin=${SINKHOLE_BIN:-$root/target/release/sinkhole}
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 2; }
missing=()
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v fstrm_capture >/dev/null || missing+=(fstrm-bin)
bench_install dnstap "${missing[@]}"
bench_workdir dnstap
mkdir -p "$work/lists"
seq 1 1000 | sed 's/^/blocked/; s/$/.example/' >"$work/lists/court.txt"
seq 1 1000 | sed 's/^/blocked/; s/$/.example A/' >"$work/queries"

# run NAME EXTRA_TOML: one dnsperf run against a fresh server.
run() {
  local name=$1 extra=$2
  cat >"$work/$name.toml" <<EOF
[server]
listen = ["127.0.0.1:0"]
workers = $WORKERS
[upstream]
servers = ["127.0.0.1:9"]
[lists]
paths = ["$work/lists"]
[metrics]
listen = "127.0.0.1:0"
$extra
EOF
  rm -f "$work/ready"
  "$bin" serve --config "$work/$name.toml" --ready-file "$work/ready" >"$work/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 300); do [ -s "$work/ready" ] && break; sleep 0.1; done
  local port metrics
  port=$(awk '$1 == "dns" { split($2, a, ":"); print a[2]; exit }' "$work/ready")
  metrics=$(awk '$1 == "metrics" { print $2; exit }' "$work/ready")
  local cpu0 cpu1
  cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" >"$work/$name.perf" 2>&1
  cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  local qps lost
  qps=$(awk '/Queries per second/ {print $4}' "$work/$name.perf")
  lost=$(awk '/Queries lost/ {print $3}' "$work/$name.perf")
  local tap
  tap=$(curl -s "http://$metrics/metrics" | awk '/^sinkhole_dnstap_messages_(sent|dropped)_total/ {printf "%s=%s ", $1, $2}')
  printf '%-10s qps %s, lost %s, server CPU %.1f s %s\n' "$name" "$qps" "$lost" \
    "$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$(getconf CLK_TCK)" 'BEGIN {print (b - a) / hz}')" "$tap"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

run plain ""
fstrm_capture -t protobuf:dnstap.Dnstap -u "$work/tap.sock" -w "$work/tap.fstrm" >/dev/null 2>&1 &
pids+=($!)
sleep 0.3
run dnstap "[dnstap]
unix = \"$work/tap.sock\"
queue_capacity = $QUEUE"
log "capture file: $(du -h "$work/tap.fstrm" | cut -f1)"
