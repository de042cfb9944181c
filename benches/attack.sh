#!/usr/bin/env bash
# Random-subdomain ("water torture") flood: `make bench-attack` (or
# benches/attack.sh after cargo build --release).
#
# dnsperf sends `<unique>.victim.example A` at each rate in ATTACK_RATES for
# ATTACK_SECONDS against a fresh server; the upstream (dnsdist on the client
# core, as in ../shared/peerbench) drops every query under victim.example and
# answers everything else at once. Meanwhile a probe asks one new (uncached)
# legitimate name every 50 ms (no retries, 2 s timeout). Servers compared in
# the same run:
#   sinkhole            defaults (max_inflight 10000, no zone limit)
#   sinkhole+zonelimit  limits.upstream_qps_per_zone = ATTACK_ZONE_QPS
#   unbound             Unbound (Debian), 1 thread, forwarding, defaults
#   unbound+ratelimit   the same with ratelimit: ATTACK_ZONE_QPS
# Reported per server and rate: legitimate lookups answered and their p99,
# flood queries answered (and how: SERVFAIL/other), the flood rate dnsperf
# actually reached, upstream queries per second for the victim zone (dnsdist
# rule matches), RSS before / peak (VmHWM) / 5 s and 10 s after the flood.
# Where unanswered flood queries went: datagrams the kernel dropped at the
# server's socket (its receive queue full: the server did not read them in
# time) and anywhere else on the machine (mostly the load generator's own
# sockets: replies it did not read in time), and for sinkhole the share of
# the queries it read that it answered (its own metrics).
# Also the RSS per waiting upstream exchange (a unit test run alone).
#
# Installs the Debian packages dnsperf, dnsdist, unbound when missing (as
# root). Loopback only; everything started here is stopped on exit.
# Environment (defaults):
#   ATTACK_RATES="10000 30000 60000" ATTACK_SECONDS=20 ATTACK_ZONE_QPS=1000
#   ATTACK_SERVERS="sinkhole sinkhole+zonelimit unbound unbound+ratelimit"
#   ATTACK_PORT=5385 ATTACK_UPSTREAM_PORT=5386 ATTACK_METRICS_PORT=5387
#   SERVER_CPU=1 CLIENT_CPU=0 KEEP=0 SINKHOLE_BIN (target/release/sinkhole)
#   ATTACK_UNIT=1: also the two memory unit measurements (they build the
#   release unit-test binary first: many minutes on a cold target/; 0 skips)
set -euo pipefail
RATES=${ATTACK_RATES:-"10000 30000 60000"} SECS=${ATTACK_SECONDS:-20} ZQPS=${ATTACK_ZONE_QPS:-1000}
SERVERS=${ATTACK_SERVERS:-"sinkhole sinkhole+zonelimit unbound unbound+ratelimit"}
PORT=${ATTACK_PORT:-5385} UPORT=${ATTACK_UPSTREAM_PORT:-5386} MPORT=${ATTACK_METRICS_PORT:-5387}
CPORT=$((UPORT + 10))
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SINKHOLE_BIN:-$root/target/release/sinkhole}
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 2; }

missing=()
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v dnsdist >/dev/null || missing+=(dnsdist)
command -v unbound >/dev/null || [ -x /usr/sbin/unbound ] || missing+=(unbound)
. "$root/benches/lib.sh"
bench_install attack ${missing[@]+"${missing[@]}"}
unbound_bin=$(command -v unbound || echo /usr/sbin/unbound)

bench_workdir attack

# --- memory per waiting exchange (unit measurement, run alone) ----------------------
per_exchange="" after_flood=""
if [ "${ATTACK_UNIT:-1}" = 1 ]; then
  per_exchange=$(cd "$root" && cargo test --release --lib memory_per_waiting_exchange -- --ignored --nocapture 2>/dev/null \
    | awk '/RSS per waiting exchange/ {print $5}')
  log "RSS per waiting upstream exchange: ${per_exchange:-NA} bytes"
  after_flood=$(cd "$root" && cargo test --release --lib memory_after_a_flood -- --ignored --nocapture 2>/dev/null \
    | awk '/anonymous RSS:/ {sub(/^.*anonymous RSS: /, ""); print}')
  log "anonymous RSS around 8,000 timed-out exchanges: ${after_flood:-NA}"
fi

# --- flood query file: unique names, enough for the highest rate ---------------------
max_rate=$(tr ' ' '\n' <<<"$RATES" | sort -n | tail -1)
lines=$((max_rate * SECS + max_rate))
log "generating $lines flood queries"
python3 - "$lines" "$work/flood.txt" <<'PY'
import random, sys
n, path = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(17)
with open(path, "w") as f:
    for i in range(n):
        f.write(f"{rnd.getrandbits(40):010x}{i}.victim.example A\n")
PY

# --- upstream: drops the victim zone, answers the rest at once ----------------------
cat > "$work/upstream.conf" <<EOF
setLocal("127.0.0.1:$UPORT")
setSecurityPollSuffix("")
controlSocket("127.0.0.1:$CPORT")
setKey("$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')")
victim = newSuffixMatchNode(); victim:add("victim.example")
addAction(SuffixMatchNodeRule(victim), DropAction())
addAction(OrRule({QTypeRule(DNSQType.A), QTypeRule(DNSQType.AAAA)}), SpoofAction({"192.0.2.1","2001:db8::1"}, {ttl=3600}))
addAction(AllRule(), RCodeAction(DNSRCode.NOERROR))
EOF
taskset -c "$CLIENT_CPU" dnsdist --supervised --disable-syslog -C "$work/upstream.conf" >"$work/upstream.log" 2>&1 &
pids+=($!)
sleep 1
udp_drops() {  # $1 = port: datagrams the kernel dropped at that UDP socket
  local hex; hex=$(printf ':%04X' "$1")
  awk -v p="$hex" 'NR > 1 && substr($2, length($2) - 4) == p {d += $NF} END {print d + 0}' /proc/net/udp
}
rcvbuf_errors() {  # every UDP socket's receive-queue drops, machine-wide
  awk '/^Udp:/ && ++n == 2 {print $6}' /proc/net/snmp
}
sinkhole_counts() {  # queries read and responses sent, from its metrics
  curl -s "http://127.0.0.1:$MPORT/metrics" 2>/dev/null | awk '
    /^sinkhole_queries_total/ {q += $NF} /^sinkhole_responses_total/ {r += $NF}
    END {printf "%d %d\n", q, r}'
}
victim_matches() {  # queries the upstream got for the victim zone so far
  dnsdist -C "$work/upstream.conf" -c -e 'showRules()' 2>/dev/null | awk '$1 == "0" {for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) {print $i; exit}}'
}

# --- servers ------------------------------------------------------------------------
start_server() {  # $1 = kind; prints the pid
  local kind=$1
  case $kind in
    sinkhole*)
      local extra=""
      [ "$kind" = sinkhole+zonelimit ] && extra="[limits]
upstream_qps_per_zone = $ZQPS"
      mkdir -p "$work/lists"; echo "blocked.example" > "$work/lists/block.txt"
      cat > "$work/sinkhole.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
workers = 1
control_socket = ""
[upstream]
servers = ["127.0.0.1:$UPORT"]
[lists]
paths = ["$work/lists/block.txt"]
watch = false
[audit]
path = "$work/audit"
[metrics]
listen = "127.0.0.1:$MPORT"
$extra
EOF
      taskset -c "$SERVER_CPU" "$bin" serve --config "$work/sinkhole.toml" >"$work/$kind.log" 2>&1 &
      ;;
    unbound*)
      local rl=0
      [ "$kind" = unbound+ratelimit ] && rl=$ZQPS
      cat > "$work/unbound.conf" <<EOF
server:
  interface: 127.0.0.1
  port: $PORT
  num-threads: 1
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  ratelimit: $rl
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$UPORT
EOF
      taskset -c "$SERVER_CPU" "$unbound_bin" -d -c "$work/unbound.conf" >"$work/$kind.log" 2>&1 &
      ;;
  esac
  echo $!
}

probe() {  # $1 = seconds; asks one new legitimate name every 50 ms
  python3 - "$PORT" "$1" <<'PY'
import random, socket, struct, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
salt = random.getrandbits(32)
def ask(name):
    qid = random.randrange(65536)
    pkt = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"".join(
        bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0\0\1\0\1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        t0 = time.monotonic()
        s.sendto(pkt, ("127.0.0.1", port))
        try:
            while True:
                r = s.recv(4096)
                if r[:2] == pkt[:2]:
                    return (r[3] & 15) == 0 and struct.unpack(">H", r[6:8])[0] > 0, time.monotonic() - t0
        except OSError:
            return False, None
ok, lat, asked = 0, [], 0
end = time.monotonic() + secs
i = 0
while time.monotonic() < end:
    good, took = ask(f"p{i}-{salt:08x}.legit.example")
    asked += 1
    if good:
        ok += 1; lat.append(took)
    i += 1
    time.sleep(0.05)
lat.sort()
p99 = lat[max(0, -(-len(lat) * 99 // 100) - 1)] * 1000 if lat else float("nan")
print(f"{ok} {asked} {p99:.1f}")
PY
}

printf '| server | offered qps | sent qps | legitimate answered | legit p99 ms | flood answered | flood SERVFAIL | victim qps upstream | RSS before → peak → +5 s → +10 s MB | dropped at server socket | dropped elsewhere | sinkhole answered of read |\n' > "$work/report.md"
printf '|---|---|---|---|---|---|---|---|---|---|---|---|\n' >> "$work/report.md"
for rate in $RATES; do
  for kind in $SERVERS; do
    spid=$(start_server "$kind")
    pids+=("$spid")
    for _ in $(seq 1 500); do
      dig +tries=1 +time=1 -p "$PORT" @127.0.0.1 warm.legit.example A 2>/dev/null | grep -q "192.0.2.1" && break
      kill -0 "$spid" 2>/dev/null || { cat "$work/$kind.log" >&2; exit 2; }
      sleep 0.02
    done
    sleep 1
    rss0=$(rss_kb "$spid")
    m0=$(victim_matches); m0=${m0:-0}
    d0=$(udp_drops "$PORT"); u0=$(udp_drops "$UPORT"); e0=$(rcvbuf_errors)
    read -r q0 a0 < <(sinkhole_counts)
    log "$kind at $rate qps for ${SECS}s (rss $(mb "$rss0") MB)"
    probe "$((SECS + 1))" > "$work/probe.txt" &
    ppid=$!
    taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/flood.txt" -l "$SECS" -Q "$rate" \
      -c 32 -q 60000 -t 5 -n 1 > "$work/dnsperf.txt" 2>&1 || true
    m1=$(victim_matches); m1=${m1:-0}
    wait "$ppid" || true
    d1=$(udp_drops "$PORT"); u1=$(udp_drops "$UPORT"); e1=$(rcvbuf_errors)
    read -r q1 a1 < <(sinkhole_counts)
    own="n/a"
    [ "${kind#sinkhole}" != "$kind" ] && [ "$q1" -gt "$q0" ] &&
      own=$(awk -v q=$((q1 - q0)) -v a=$((a1 - a0)) 'BEGIN {printf "%.2f%%", 100 * a / q}')
    hwm=$(hwm_kb "$spid")
    sleep 4; rss5=$(rss_kb "$spid")
    sleep 5; rss10=$(rss_kb "$spid")
    kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true
    read -r ok asked p99 < "$work/probe.txt"
    sent=$(awk '/Queries sent:/ {print $3}' "$work/dnsperf.txt")
    done_=$(awk '/Queries completed:/ {print $3}' "$work/dnsperf.txt")
    servfail=$(awk '/Response codes:/ {for (i = 3; i <= NF; i++) if ($i == "SERVFAIL") {v = $(i + 1); gsub(/[^0-9]/, "", v); print v}}' "$work/dnsperf.txt")
    runtime=$(awk '/Run time \(s\):/ {print $4}' "$work/dnsperf.txt")
    row=$(awk -v k="$kind" -v r="$rate" -v s="${sent:-0}" -v d="${done_:-0}" -v sf="${servfail:-0}" -v t="${runtime:-$SECS}" \
      -v ok="$ok" -v a="$asked" -v p="$p99" -v m0="$m0" -v m1="$m1" -v secs="$SECS" \
      -v r0="$rss0" -v h="$hwm" -v r5="$rss5" -v r10="$rss10" \
      -v sd=$((d1 - d0)) -v od=$((e1 - e0 - (d1 - d0) - (u1 - u0))) -v own="$own" 'BEGIN {
        pct = s > 0 ? 100 * d / s : 0; sfp = s > 0 ? 100 * sf / s : 0
        if (od < 0) od = 0
        printf "| %s | %d | %.0f | %d / %d | %s | %.1f%% | %.1f%% | %.0f | %.1f → %.1f → %.1f → %.1f | %.1f%% | %.1f%% | %s |",
          k, r, s / secs, ok, a, p, pct, sfp, (m1 - m0) / secs, r0 / 1024, h / 1024, r5 / 1024, r10 / 1024,
          (s > 0 ? 100 * sd / s : 0), (s > 0 ? 100 * od / s : 0), own }')
    echo "$row" >> "$work/report.md"
    log "$row"
    sleep 1
  done
done
echo
echo "RSS per waiting upstream exchange (sinkhole, unit measurement): ${per_exchange:-NA} bytes"
echo "anonymous RSS around 8,000 timed-out exchanges (unit measurement): ${after_flood:-NA}"
echo "flood ${SECS}s per run; zone limit / ratelimit $ZQPS qps; $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
cat "$work/report.md"
