#!/usr/bin/env bash
# [rpz.serve] sizes and times: a list of N random names served as an RPZ;
# dig takes an AXFR (records, messages, bytes, seconds), then 1% of the
# names are replaced and dig takes the IXFR from the old serial (what a
# follower transfers per 1% change).
#
#   benches/rpz_serve.sh [N]        (default 100000; BIN=target/release/sinkhole)
#
# Uses the release binary when it exists (`make release`), else the debug
# one (times are then a debug build's). Needs dig (bind9-dnsutils).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/benches/lib.sh"
n=${1:-100000}
bin=${BIN:-}
if [ -z "$bin" ]; then
  bin="$root/target/release/sinkhole"
  [ -x "$bin" ] || bin="$root/target/debug/sinkhole"
fi
command -v dig >/dev/null || bench_install rpz_serve bind9-dnsutils
bench_workdir rpz-serve
mkdir -p "$work/lists" "$work/state"
awk -v n="$n" 'BEGIN { srand(14); for (i = 0; i < n; i++) {
  s = ""; for (j = 0; j < 10; j++) s = s sprintf("%c", 97 + int(rand() * 26));
  printf "%s%d.example\n", s, i } }' >"$work/lists/court.txt"
cat >"$work/sinkhole.toml" <<EOF
[server]
listen = ["127.0.0.1:0"]
workers = 1
[upstream]
servers = ["127.0.0.1:9"]
[lists]
paths = ["$work/lists"]
state_dir = "$work/state"
max_shrink_ratio = 1.0
[rpz.serve]
zone = "rpz.bench"
EOF
log "starting $bin with $n names"
t0=$(date +%s.%N)
"$bin" serve --config "$work/sinkhole.toml" --ready-file "$work/ready" >"$work/log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do [ -s "$work/ready" ] && break; sleep 0.1; done
port=$(awk '$1 == "dns" { split($2, a, ":"); print a[2]; exit }' "$work/ready")
t1=$(date +%s.%N)
log "ready after $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') s (lists + zone build), RSS $(mb "$(rss_kb "${pids[0]}")") MiB"
serial=$(dig +short -p "$port" @127.0.0.1 rpz.bench SOA | awk '{print $3}')
t2=$(date +%s.%N)
dig +tcp -p "$port" @127.0.0.1 rpz.bench AXFR >"$work/axfr"
t3=$(date +%s.%N)
echo "AXFR ($n names): $(grep -o 'XFR size: .*' "$work/axfr"), $(awk -v a="$t2" -v b="$t3" 'BEGIN {printf "%.2f", b - a}') s; RSS after $(mb "$(rss_kb "${pids[0]}")") MiB"
# 1% change: replace the first n/100 names.
k=$((n / 100))
{ tail -n +"$((k + 1))" "$work/lists/court.txt"; seq 1 "$k" | sed 's/$/.changed.example/'; } >"$work/court.new"
mv "$work/court.new" "$work/lists/court.txt"
t4=$(date +%s.%N)
for _ in $(seq 1 600); do
  now=$(dig +short -p "$port" @127.0.0.1 rpz.bench SOA | awk '{print $3}')
  [ -n "$now" ] && [ "$now" != "$serial" ] && break
  sleep 0.05
done
t5=$(date +%s.%N)
echo "1% change ($k names): new serial $now after $(awk -v a="$t4" -v b="$t5" 'BEGIN {printf "%.2f", b - a}') s (reload + zone rebuild)"
dig +tcp -p "$port" @127.0.0.1 rpz.bench IXFR="$serial" >"$work/ixfr"
echo "IXFR from $serial: $(grep -o 'XFR size: .*' "$work/ixfr")"
