#!/usr/bin/env bash
# RPZ follow benchmark (issue 14): benches/rpz.sh after
# `cargo build --release`. A Debian BIND primary (named on loopback) serves
# an RPZ zone of RPZ_N names (default 1,000,000, `nNNNNNNN.example CNAME .`)
# with TSIG, NOTIFY to the follower and ixfr-from-differences; one sinkhole
# node follows it ([[rpz.follow]], state_dir, metrics). Reported:
#  * axfr_ms: from starting sinkhole until a name of the zone answers
#    NXDOMAIN (the AXFR, writing the zone file, the full compile and swap);
#    axfr_peak_rss_mb: the follower's VmHWM then; steady_rss_mb after it;
#  * change_ms: RPZ_CHANGE names (default 10,000 = 1%) added with nsupdate
#    in batches of 1,000 per UPDATE message, from the start of nsupdate
#    until the last added name answers NXDOMAIN on the follower (NOTIFY,
#    SOA check, IXFR, apply to the zone file, incremental reload);
#  * the follower's own log lines for each transfer put in force.
# Without load (no dnsperf) and without the Unbound peer: see the closing
# note of issue 14. Needs named, tsig-keygen, nsupdate, dig (bind9,
# bind9-utils, bind9-dnsutils: installed as root when missing). Loopback
# only; everything started here is stopped on exit (trap); every wait is
# bounded.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/benches/lib.sh"
N=${RPZ_N:-1000000}
CHANGE=${RPZ_CHANGE:-10000}
BATCH=${RPZ_BATCH:-1000}
bin=${SINKHOLE:-$root/target/release/sinkhole}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
missing=()
for c in named:bind9 tsig-keygen:bind9-utils nsupdate:bind9-dnsutils dig:bind9-dnsutils; do
  command -v "${c%%:*}" >/dev/null || missing+=("${c#*:}")
done
bench_install rpz "${missing[@]}"
bench_workdir rpz

free_port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
status() { dig @"$1" -p "$2" +tries=1 +time=1 +noall +comments "$3" A 2>/dev/null | sed -n 's/.*status: \([A-Z]*\).*/\1/p'; }
# wait_nx ADDR PORT NAME SECONDS: until NAME answers NXDOMAIN; 1 on timeout.
wait_nx() {
  local end=$(( $(now_ms) + $4 * 1000 ))
  while [ "$(now_ms)" -lt "$end" ]; do
    [ "$(status "$1" "$2" "$3")" = NXDOMAIN ] && return 0
    sleep 0.02
  done
  return 1
}

bind_port=$(free_port 127.0.0.1)
node_ip=127.0.0.2
node_port=$(free_port $node_ip)
tsig-keygen -a hmac-sha256 xfr-key > "$work/xfr.key"
secret=$(sed -n 's/.*secret "\(.*\)".*/\1/p' "$work/xfr.key")
log "zone of $N names"
{
  printf '$TTL 300\n@ SOA localhost. admin.localhost. 1 3600 60 604800 60\n@ NS localhost.\n'
  awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "n%08d.example CNAME .\n", i }'
} > "$work/rpz.test.zone"
cat > "$work/named.conf" <<CONF
include "$work/xfr.key";
options { directory "$work"; pid-file "$work/named.pid"; session-keyfile "$work/session.key";
  listen-on port $bind_port { 127.0.0.1; }; listen-on-v6 { none; }; recursion no;
  notify explicit; notify-delay 0; notify-source 127.0.0.1; };
controls { };
zone "rpz.test" { type primary; file "$work/rpz.test.zone";
  allow-transfer { key xfr-key; }; allow-update { key xfr-key; };
  also-notify { $node_ip port $node_port; };
  ixfr-from-differences yes; max-ixfr-ratio unlimited; };
CONF
t0=$(now_ms)
named -g -n 1 -c "$work/named.conf" > "$work/named.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do
  [ "$(dig @127.0.0.1 -p "$bind_port" +short rpz.test SOA 2>/dev/null | awk '{print $3}')" = 1 ] && break
  sleep 0.1
done
log "named serves the zone after $(( $(now_ms) - t0 )) ms"

mkdir -p "$work/lists" "$work/state"
echo "local.example" > "$work/lists/local.txt"
cat > "$work/sinkhole.toml" <<CONF
[server]
listen = ["$node_ip:$node_port"]
[upstream]
servers = ["127.0.0.1:9"]
[lists]
paths = ["$work/lists"]
state_dir = "$work/state"
[[rpz.follow]]
zone = "rpz.test"
primaries = ["127.0.0.1:$bind_port"]
tsig_key_file = "$work/xfr.key"
CONF
t0=$(now_ms)
RUST_LOG=sinkhole=info "$bin" serve --config "$work/sinkhole.toml" > "$work/sinkhole.log" 2>&1 &
spid=$!
pids+=($spid)
probe=$(printf 'n%08d.example' $(( N - 1 )))
wait_nx $node_ip "$node_port" "$probe" 300 || { tail -20 "$work/sinkhole.log"; echo "AXFR not enforced" >&2; exit 1; }
axfr_ms=$(( $(now_ms) - t0 ))
axfr_peak=$(mb "$(hwm_kb $spid)")
sleep 2
steady=$(mb "$(rss_kb $spid)")
log "AXFR of $N names enforced after $axfr_ms ms; peak RSS $axfr_peak MB, steady $steady MB"

log "nsupdate: $CHANGE names in batches of $BATCH"
awk -v n="$CHANGE" -v b="$BATCH" -v port="$bind_port" 'BEGIN {
  printf "server 127.0.0.1 %s\nzone rpz.test\n", port
  for (i = 0; i < n; i++) {
    printf "update add c%08d.example.rpz.test. 300 CNAME .\n", i
    if ((i + 1) % b == 0 || i == n - 1) printf "send\n"
  }
}' > "$work/update.txt"
last=$(printf 'c%08d.example' $(( CHANGE - 1 )))
t0=$(now_ms)
nsupdate -y "hmac-sha256:xfr-key:$secret" "$work/update.txt"
sent_ms=$(( $(now_ms) - t0 ))
wait_nx $node_ip "$node_port" "$last" 60 || { tail -20 "$work/sinkhole.log"; echo "change not enforced" >&2; exit 1; }
change_ms=$(( $(now_ms) - t0 ))
log "nsupdate of $CHANGE names took $sent_ms ms; enforced on the follower after $change_ms ms"
sed 's/\x1b\[[0-9;]*m//g' "$work/sinkhole.log" | grep -E 'followed zone in force|AXFR received|IXFR received' | tail -8 >&2
echo "N=$N axfr_ms=$axfr_ms axfr_peak_rss_mb=$axfr_peak steady_rss_mb=$steady change=$CHANGE nsupdate_ms=$sent_ms change_to_enforced_ms=$change_ms"
