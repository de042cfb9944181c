#!/usr/bin/env bash
# RPZ follow benchmark (issue 14): benches/rpz.sh after
# `cargo build --release`. A Debian BIND primary (named on loopback) serves
# an RPZ zone of RPZ_N names (default 1,000,000, `nNNNNNNN.example CNAME .`)
# with TSIG, NOTIFY and ixfr-from-differences; one sinkhole node follows it
# ([[rpz.follow]], state_dir) and, in the same run, Debian Unbound follows it
# too (`rpz:` with `primary:`; Unbound cannot sign transfers, so BIND lets
# its address transfer without TSIG) as the peer reference. Reported:
#  * axfr_ms: from starting the follower until the zone's last name answers
#    NXDOMAIN (transfer, compile or load, swap); peak RSS (VmHWM) then, and
#    steady RSS after; for sinkhole and for Unbound;
#  * RPZ_RUNS (default 3) changes of RPZ_CHANGE names (default 10,000 = 1%)
#    added with nsupdate in batches of RPZ_BATCH (1,000) per UPDATE, each
#    while dnsperf sends RPZ_QPS queries/s (default 2,000) of names of the
#    zone to each follower for RPZ_LOAD_S seconds (default 20): the time
#    from the start of nsupdate until the last added name answers NXDOMAIN
#    on each follower, and each dnsperf's lost queries;
#  * the medians over the runs, the load average before each run (the
#    machine may be shared: figures are upper bounds), and sinkhole's log
#    lines for the transfers it put in force (layer or rewrite).
# Needs named, tsig-keygen, nsupdate, dig, unbound and dnsperf (bind9,
# bind9-utils, bind9-dnsutils, unbound, dnsperf: installed as root when
# missing). Loopback only; everything started here is stopped on exit
# (trap); every wait is bounded.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/benches/lib.sh"
N=${RPZ_N:-1000000}
CHANGE=${RPZ_CHANGE:-10000}
BATCH=${RPZ_BATCH:-1000}
bin=${SINKHOLE:-$root/target/release/sinkhole}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
missing=()
RUNS=${RPZ_RUNS:-3}
QPS=${RPZ_QPS:-2000}
LOAD_S=${RPZ_LOAD_S:-20}
for c in named:bind9 tsig-keygen:bind9-utils nsupdate:bind9-dnsutils dig:bind9-dnsutils unbound:unbound dnsperf:dnsperf; do
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
ub_ip=127.0.0.3
ub_port=$(free_port $ub_ip)
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
  allow-transfer { key xfr-key; $ub_ip; }; allow-update { key xfr-key; };
  also-notify { $node_ip port $node_port; $ub_ip port $ub_port; };
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

# The peer: Unbound following the same primary (after sinkhole's figures,
# so the two first transfers do not share the CPU).
cat > "$work/unbound.conf" <<CONF
server:
    interface: $ub_ip
    port: $ub_port
    outgoing-interface: $ub_ip
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$work"
    pidfile: "$work/unbound.pid"
    logfile: "$work/unbound.log"
    use-syslog: no
    verbosity: 1
    do-ip6: no
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    module-config: "respip iterator"
    num-threads: 1
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@9
rpz:
    name: "rpz.test"
    primary: 127.0.0.1@$bind_port
    zonefile: "$work/unbound-rpz.test.zone"
remote-control:
    control-enable: no
CONF
t0=$(now_ms)
unbound -d -c "$work/unbound.conf" > "$work/unbound.out" 2>&1 &
upid=$!
pids+=($upid)
wait_nx $ub_ip "$ub_port" "$probe" 600 || { tail -20 "$work/unbound.log"; echo "Unbound never enforced the zone" >&2; exit 1; }
ub_axfr_ms=$(( $(now_ms) - t0 ))
ub_peak=$(mb "$(hwm_kb $upid)")
sleep 2
ub_steady=$(mb "$(rss_kb $upid)")
log "Unbound: AXFR of $N names enforced after $ub_axfr_ms ms; peak RSS $ub_peak MB, steady $ub_steady MB"

# Load: names of the zone (answered by policy on both, no upstream).
awk -v n="$N" 'BEGIN { srand(7); for (i = 0; i < 100000; i++) printf "n%08d.example A\n", int(rand() * n) }' > "$work/queries.txt"
# load ADDR PORT OUT: dnsperf in the background (its pid in $!), output to OUT.
load() {
  dnsperf -s "$1" -p "$2" -d "$work/queries.txt" -l "$LOAD_S" -Q "$QPS" -c 4 -t 2 > "$3" 2>&1 &
}
lost() { awk '/Queries lost:/ {print $3; exit}' "$1"; }
sent() { awk '/Queries sent:/ {print $3; exit}' "$1"; }
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }

# poll_both T0 NAME: until NAME answers NXDOMAIN on both followers (120 s
# at most); prints "sinkhole_ms unbound_ms" (-1: never).
poll_both() {
  local t0=$1 name=$2 s=-1 u=-1 end=$(( $(now_ms) + 120000 ))
  while [ "$(now_ms)" -lt "$end" ] && { [ "$s" = -1 ] || [ "$u" = -1 ]; }; do
    [ "$s" = -1 ] && [ "$(status $node_ip "$node_port" "$name")" = NXDOMAIN ] && s=$(( $(now_ms) - t0 ))
    [ "$u" = -1 ] && [ "$(status $ub_ip "$ub_port" "$name")" = NXDOMAIN ] && u=$(( $(now_ms) - t0 ))
    sleep 0.02
  done
  echo "$s $u"
}

s_times=(); u_times=()
for run in $(seq "$RUNS"); do
  load_avg=$(cut -d' ' -f1-3 /proc/loadavg)
  log "run $run: $CHANGE names by nsupdate in batches of $BATCH, under $QPS q/s to each follower (load average $load_avg)"
  awk -v n="$CHANGE" -v b="$BATCH" -v port="$bind_port" -v r="$run" 'BEGIN {
    printf "server 127.0.0.1 %s\nzone rpz.test\n", port
    for (i = 0; i < n; i++) {
      printf "update add c%d-%08d.example.rpz.test. 300 CNAME .\n", r, i
      if ((i + 1) % b == 0 || i == n - 1) printf "send\n"
    }
  }' > "$work/update.txt"
  last=$(printf 'c%d-%08d.example' "$run" $(( CHANGE - 1 )))
  load $node_ip "$node_port" "$work/dnsperf-s-$run.txt"
  dp_s=$!
  load $ub_ip "$ub_port" "$work/dnsperf-u-$run.txt"
  dp_u=$!
  pids+=("$dp_s" "$dp_u")
  sleep 3
  t0=$(now_ms)
  nsupdate -y "hmac-sha256:xfr-key:$secret" "$work/update.txt"
  sent_ms=$(( $(now_ms) - t0 ))
  read -r s_ms u_ms < <(poll_both "$t0" "$last")
  wait "$dp_s" "$dp_u" 2>/dev/null || true
  s_lost=$(lost "$work/dnsperf-s-$run.txt"); u_lost=$(lost "$work/dnsperf-u-$run.txt")
  s_sent=$(sent "$work/dnsperf-s-$run.txt"); u_sent=$(sent "$work/dnsperf-u-$run.txt")
  log "run $run: nsupdate took $sent_ms ms; enforced after: sinkhole $s_ms ms, Unbound $u_ms ms; lost queries: sinkhole $s_lost of $s_sent, Unbound $u_lost of $u_sent"
  echo "run=$run load_avg=\"$load_avg\" nsupdate_ms=$sent_ms sinkhole_change_ms=$s_ms unbound_change_ms=$u_ms sinkhole_lost=$s_lost/$s_sent unbound_lost=$u_lost/$u_sent"
  s_times+=("$s_ms"); u_times+=("$u_ms")
done
sed 's/\x1b\[[0-9;]*m//g' "$work/sinkhole.log" | grep -E 'followed zone in force|AXFR received|IXFR received|journal folded|lists reloaded' | tail -30 >&2
s_med=$(printf '%s\n' "${s_times[@]}" | median)
u_med=$(printf '%s\n' "${u_times[@]}" | median)
echo "N=$N change=$CHANGE runs=$RUNS qps=$QPS sinkhole_axfr_ms=$axfr_ms sinkhole_axfr_peak_rss_mb=$axfr_peak sinkhole_steady_rss_mb=$steady unbound_axfr_ms=$ub_axfr_ms unbound_axfr_peak_rss_mb=$ub_peak unbound_steady_rss_mb=$ub_steady sinkhole_change_median_ms=$s_med unbound_change_median_ms=$u_med"
