#!/usr/bin/env bash
# Load benchmark for `sinkhole serve` with Debian's dnsperf.
#
#   cargo build --release
#   benches/dnsperf.sh [N]          # N = blocklist size (default 3500; try 1000000)
#
# Starts a local upstream, the release binary pinned to one core, and runs
# dnsperf twice (run 1 starts with an empty cache) with a peerbench-like
# query mix: 20% blocked (half exact, half subdomains), 80% allowed names
# drawn Zipf(1) from a 50,000-name pool, 85% A / 15% AAAA. Prints qps and
# the server's CPU seconds, i.e. queries per server CPU-second, the figure
# the issue compares (dnsperf itself saturates one core at ~100k qps here,
# so raw qps cannot rank fast servers).
#
# Needs: dnsperf (apt-get install dnsperf), python3, taskset; dnsdist is used
# as the upstream when installed (as in ../shared/peerbench), else a small
# python responder (fine: after warm-up nearly every allowed query is a
# cache hit). Installs nothing. Environment (defaults):
#   DURATION=15 CLIENTS=20 OUTSTANDING=100 MAXQPS=200000 RUNS=2
#   SERVER_CPU=1 CLIENT_CPU=0 PORT=5390 UPSTREAM_PORT=5391 WORKERS=1
#   KEEP=0 (1: keep the scratch folder)
set -euo pipefail
N=${1:-3500}
DURATION=${DURATION:-15} CLIENTS=${CLIENTS:-20} OUTSTANDING=${OUTSTANDING:-100}
MAXQPS=${MAXQPS:-200000} RUNS=${RUNS:-2} WORKERS=${WORKERS:-1}
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
PORT=${PORT:-5390} UPSTREAM_PORT=${UPSTREAM_PORT:-5391}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SINKHOLE_BIN:-$root/target/release/sinkhole}
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 2; }
command -v dnsperf >/dev/null || { echo "dnsperf missing (apt-get install dnsperf)" >&2; exit 2; }

work=$(mktemp -d /tmp/sinkhole-dnsperf.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

# --- data ------------------------------------------------------------------
python3 - "$N" "$work" <<'PY'
import random, sys
n, work = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(42)
words = ["alpha","bit","coin","dex","fast","gold","hash","moon","node","pay","quant","rich","safe","token","trade","vault","yield","zen"]
tlds = ["kz","io","xyz","com","net","org","app","cc"]
def name(i, salt):
    return f"{words[i % 18]}{words[(i // 18) % 18]}{i}-{salt}.{tlds[i % 8]}"
blocked = [name(i, "exchange") for i in range(n)]
pool = [name(i, "shop") for i in range(50000)]
with open(f"{work}/blocklist.txt", "w") as f:
    f.write("\n".join(blocked) + "\n")
weights = [1.0 / (k + 1) for k in range(len(pool))]
allowed = rnd.choices(pool, weights=weights, k=160000)
subs = ["www.", "api.", "m.", "cdn.", "a.b."]
qs = []
for i in range(40000):
    b = rnd.choice(blocked)
    qs.append(b if i % 2 == 0 else rnd.choice(subs) + b)
qs += allowed
rnd.shuffle(qs)
with open(f"{work}/queries.txt", "w") as f:
    for q in qs:
        f.write(f"{q} {'AAAA' if rnd.random() < 0.15 else 'A'}\n")
PY

# --- upstream --------------------------------------------------------------
if command -v dnsdist >/dev/null; then
  cat > "$work/upstream.conf" <<EOF
setLocal("127.0.0.1:$UPSTREAM_PORT")
setSecurityPollSuffix("")
addAction(OrRule({QTypeRule(DNSQType.A), QTypeRule(DNSQType.AAAA)}), SpoofAction({"192.0.2.1","2001:db8::1"}, {ttl=3600}))
addAction(AllRule(), RCodeAction(DNSRCode.NOERROR))
EOF
  taskset -c "$CLIENT_CPU" dnsdist --supervised --disable-syslog -C "$work/upstream.conf" >"$work/upstream.log" 2>&1 &
else
  cat > "$work/upstream.py" <<'PY'
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    q, a = s.recvfrom(4096)
    if len(q) < 12: continue
    i = 12
    while i < len(q) and q[i]: i += 1 + q[i]
    qt = struct.unpack("!H", q[i+1:i+3])[0] if i + 5 <= len(q) else 0
    qend = i + 5
    ans = b""
    if qt == 1: ans = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04" + bytes([192,0,2,1])
    elif qt == 28: ans = b"\xc0\x0c\x00\x1c\x00\x01\x00\x00\x0e\x10\x00\x10" + bytes.fromhex("20010db8000000000000000000000001")
    flags = 0x8180 | (struct.unpack("!H", q[2:4])[0] & 0x0110)
    hdr = q[:2] + struct.pack("!HHHHH", flags, 1, 1 if ans else 0, 0, 0)
    s.sendto(hdr + q[12:qend] + ans, a)
PY
  taskset -c "$CLIENT_CPU" python3 "$work/upstream.py" "$UPSTREAM_PORT" >"$work/upstream.log" 2>&1 &
fi
pids+=($!)

# --- server ----------------------------------------------------------------
cat > "$work/sinkhole.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
workers = $WORKERS
[upstream]
servers = ["127.0.0.1:$UPSTREAM_PORT"]
[lists]
paths = ["$work/blocklist.txt"]
[audit]
path = "$work/audit"
EOF
t0=$(date +%s.%N)
taskset -c "$SERVER_CPU" "$bin" serve --config "$work/sinkhole.toml" >"$work/sinkhole.log" 2>&1 &
spid=$!
pids+=($spid)
probe=$(head -1 "$work/blocklist.txt")
for _ in $(seq 1 500); do
  if dig +tries=1 +time=1 -p "$PORT" @127.0.0.1 "$probe" A 2>/dev/null | grep -q NXDOMAIN; then break; fi
  sleep 0.01
done
t1=$(date +%s.%N)
rss=$(awk '/VmRSS/ {print $2/1024}' "/proc/$spid/status")
printf 'N=%s ready_s=%.3f rss_mb=%.1f\n' "$N" "$(echo "$t1 - $t0" | bc)" "$rss"

tck=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$spid/stat"; }
for run in $(seq 1 "$RUNS"); do
  c0=$(cpu)
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/queries.txt" -l "$DURATION" \
    -c "$CLIENTS" -Q "$MAXQPS" -q "$OUTSTANDING" -t 5 >"$work/dnsperf-$run.txt" 2>&1
  c1=$(cpu)
  qps=$(awk '/Queries per second/ {print $4}' "$work/dnsperf-$run.txt")
  lost=$(awk '/Queries lost/ {print $3}' "$work/dnsperf-$run.txt")
  secs=$(echo "scale=3; ($c1 - $c0) / $tck" | bc)
  printf 'run=%s qps=%s lost=%s server_cpu_s=%s cpu_pct=%s qps_per_cpu_s=%s\n' "$run" "$qps" "$lost" "$secs" \
    "$(echo "scale=1; 100 * $secs / $DURATION" | bc)" \
    "$(echo "scale=0; $qps * $DURATION / $secs" | bc 2>/dev/null || echo -)"
done
rss=$(awk '/VmRSS/ {print $2/1024}' "/proc/$spid/status")
printf 'rss_after_mb=%.1f\n' "$rss"
