#!/usr/bin/env bash
# Overload test: `make overload` (or benches/overload.sh after cargo build --release).
#
# resperf (Debian dnsperf package) ramps the query rate from 0 to
# OVERLOAD_MAX_QPS over OVERLOAD_RAMP seconds against the release binary,
# well past what one core can answer. Query mix (per 100): 10 blocked (half
# subdomains), 60 popular names (Zipf over 50,000: cache hits), 26 unique
# names answered at once by the upstream (cache misses), 3 unique names the
# upstream answers after OVERLOAD_SLOW_MS (slow authoritative servers) and 1
# unique name it never answers (dead servers: SERVFAIL after
# upstream.timeout_ms). So 30% of the queries go upstream. The upstream is dnsdist on the client core, as in
# ../shared/peerbench. Reports:
#   max throughput (resperf: highest rate with loss <= OVERLOAD_MAX_LOSS %)
#   sinkhole_shed_queries_total, sampled peak of sinkhole_inflight_queries
#   RSS before / peak (VmHWM) / after, server CPU over the ramp and its
#   highest ~1 s value (below ~90%: the client core, which also runs the
#   upstream, was the limit, not sinkhole)
#   recovery: time until blocked, cached and new names answer correctly
#   after the ramp, then OVERLOAD_RECOVERY_SECONDS of dnsperf at
#   OVERLOAD_RECOVERY_QPS (lost must be 0)
# Exit 1 when sinkhole died, did not recover, lost queries after the ramp, or
# peaked above OVERLOAD_RSS_LIMIT_MB.
#
# Installs the Debian packages dnsperf, dnsdist, bind9-dnsutils when missing
# (as root). Loopback only; everything started here is stopped on exit.
# Environment (defaults):
#   OVERLOAD_MAX_QPS=200000 OVERLOAD_RAMP=60 OVERLOAD_MAX_LOSS=1
#   OVERLOAD_MAX_INFLIGHT=10000 (server.max_inflight) OVERLOAD_N=100000 (list)
#   OVERLOAD_SLOW_MS=200 OVERLOAD_LINES=3000000 (query file)
#   OVERLOAD_RECOVERY_SECONDS=10 OVERLOAD_RECOVERY_QPS=10000
#   OVERLOAD_RSS_LIMIT_MB=1024 OVERLOAD_FALL_BEHIND=0 (resperf -F; 0: keep
#   ramping when the client cannot send at the target rate; the report shows
#   the rate actually sent) OVERLOAD_PORT=5395 OVERLOAD_UPSTREAM_PORT=5396
#   OVERLOAD_METRICS_PORT=5397 SERVER_CPU=1 CLIENT_CPU=0 KEEP=0
#   SINKHOLE_BIN (default target/release/sinkhole)
set -euo pipefail
MAXQ=${OVERLOAD_MAX_QPS:-200000} RAMP=${OVERLOAD_RAMP:-60} MAXLOSS=${OVERLOAD_MAX_LOSS:-1}
INFL=${OVERLOAD_MAX_INFLIGHT:-10000} N=${OVERLOAD_N:-100000} SLOW=${OVERLOAD_SLOW_MS:-200}
LINES=${OVERLOAD_LINES:-3000000} RSECS=${OVERLOAD_RECOVERY_SECONDS:-10} RQPS=${OVERLOAD_RECOVERY_QPS:-10000}
RSS_LIMIT=${OVERLOAD_RSS_LIMIT_MB:-1024} FALL=${OVERLOAD_FALL_BEHIND:-0}
PORT=${OVERLOAD_PORT:-5395} UPORT=${OVERLOAD_UPSTREAM_PORT:-5396} MPORT=${OVERLOAD_METRICS_PORT:-5397}
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SINKHOLE_BIN:-$root/target/release/sinkhole}
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 2; }

missing=()
command -v resperf >/dev/null && command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v dnsdist >/dev/null || missing+=(dnsdist)
command -v dig >/dev/null || missing+=(bind9-dnsutils)
. "$root/benches/lib.sh"
bench_install overload ${missing[@]+"${missing[@]}"}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
bench_workdir overload
scrape() { python3 -c '
import sys, urllib.request
try:
    print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode())
except Exception:
    pass' "$MPORT"; }
metric() {  # sum of a metric's samples in a scrape file
  awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $NF; f = 1} END {if (f) printf "%.0f\n", s; else print "NA"}' "$2"
}
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz}' "/proc/$1/stat"; }

# --- data ----------------------------------------------------------------------
log "generating $LINES queries"
mkdir -p "$work/lists"
python3 - "$N" "$LINES" "$work" <<'PY'
import random, sys
n, lines, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rnd = random.Random(11)
words = ["alpha","bit","coin","dex","fast","gold","hash","moon","node","pay","quant","rich","safe","token","trade","vault","yield","zen"]
tlds = ["kz","io","xyz","com","net","org","app","cc"]
def name(i, salt):
    return f"{words[i % 18]}{words[(i // 18) % 18]}{i}-{salt}.{tlds[i % 8]}"
blocked = [name(i, "exchange") for i in range(n)]
open(f"{work}/lists/blocklist.txt", "w").write("\n".join(blocked) + "\n")
pool = [name(i, "shop") for i in range(50000)]
cum, acc = [], 0.0
for k in range(len(pool)):
    acc += 1.0 / (k + 1); cum.append(acc)
popular = rnd.choices(pool, cum_weights=cum, k=lines * 60 // 100 + 1)
subs = ["www.", "api.", "m.", "cdn.", "a.b."]
kinds = ["b"] * 10 + ["p"] * 60 + ["u"] * 26 + ["s"] * 3 + ["d"] * 1
pi = 0
with open(f"{work}/queries.txt", "w") as f:
    for i in range(lines):
        k = rnd.choice(kinds)
        if k == "b":
            b = rnd.choice(blocked)
            q = b if i % 2 else rnd.choice(subs) + b
        elif k == "p":
            q = popular[pi % len(popular)]; pi += 1
        elif k == "u":
            q = f"u{i}-{rnd.choice(words)}.{rnd.choice(tlds)}"
        elif k == "s":
            q = f"s{i}.{rnd.choice(words)}.slow.example"
        else:
            q = f"d{i}.{rnd.choice(words)}.dead.example"
        f.write(f"{q} {'AAAA' if rnd.random() < 0.15 else 'A'}\n")
print(blocked[0], pool[0])
PY
probe_blocked=www.$(head -1 "$work/lists/blocklist.txt")
probe_cached=alphaalpha0-shop.kz

# --- upstream --------------------------------------------------------------------
cat > "$work/upstream.conf" <<EOF
setLocal("127.0.0.1:$UPORT")
setSecurityPollSuffix("")
slow = newSuffixMatchNode(); slow:add("slow.example")
dead = newSuffixMatchNode(); dead:add("dead.example")
addAction(SuffixMatchNodeRule(dead), DropAction())
addAction(SuffixMatchNodeRule(slow), DelayAction($SLOW))
addAction(OrRule({QTypeRule(DNSQType.A), QTypeRule(DNSQType.AAAA)}), SpoofAction({"192.0.2.1","2001:db8::1"}, {ttl=3600}))
addAction(AllRule(), RCodeAction(DNSRCode.NOERROR))
EOF
taskset -c "$CLIENT_CPU" dnsdist --supervised --disable-syslog -C "$work/upstream.conf" >"$work/upstream.log" 2>&1 &
pids+=($!)

# --- sinkhole ----------------------------------------------------------------------
cat > "$work/sinkhole.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
workers = 0
control_socket = ""
max_inflight = $INFL
[upstream]
servers = ["127.0.0.1:$UPORT"]
[lists]
paths = ["$work/lists/blocklist.txt"]
[policy]
action = "nxdomain"
[audit]
path = "$work/audit"
[metrics]
listen = "127.0.0.1:$MPORT"
EOF
taskset -c "$SERVER_CPU" "$bin" serve --config "$work/sinkhole.toml" >"$work/sinkhole.log" 2>&1 &
spid=$!
pids+=($spid)
for _ in $(seq 1 3000); do
  dig +tries=1 +time=1 -p "$PORT" @127.0.0.1 "$probe_blocked" A 2>/dev/null | grep -q NXDOMAIN && break
  kill -0 "$spid" 2>/dev/null || { cat "$work/sinkhole.log" >&2; exit 2; }
  sleep 0.01
done
dig +tries=1 +time=1 -p "$PORT" @127.0.0.1 "$probe_cached" A >/dev/null 2>&1 || true
rss_before=$(rss_kb "$spid")
log "sinkhole up, rss $(mb "$rss_before") MB; resperf 0 -> $MAXQ qps over ${RAMP}s"

# --- sampler: RSS and in-flight every 0.5 s ------------------------------------------
(
  while kill -0 "$spid" 2>/dev/null; do
    infl=$(scrape | awk '$1 == "sinkhole_inflight_queries" {print $2}')
    echo "$(date +%s.%N) $(rss_kb "$spid") ${infl:-NA} $(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$spid/stat" 2>/dev/null)"
    sleep 0.5
  done
) > "$work/samples.txt" 2>/dev/null &
sampler=$!
pids+=($sampler)

# --- ramp --------------------------------------------------------------------------------
c0=$(cpu_s "$spid"); w0=$(date +%s.%N)
taskset -c "$CLIENT_CPU" resperf -s 127.0.0.1 -p "$PORT" -d "$work/queries.txt" -R -m "$MAXQ" -r "$RAMP" -c 0 \
  -L "$MAXLOSS" -C 20 -t 5 -i 1 -F "$FALL" -P "$work/resperf.plot" >"$work/resperf.txt" 2>&1 || true
t_end=$(date +%s.%N)
c1=$(cpu_s "$spid")
cpu_pct=$(awk -v a="$c0" -v b="$c1" -v w0="$w0" -v w1="$t_end" 'BEGIN {printf "%.0f", (b - a) * 100 / (w1 - w0)}')
alive_after_ramp=yes; kill -0 "$spid" 2>/dev/null || alive_after_ramp=no

# --- recovery: first correct answers, then steady load -----------------------------------
recover=$(python3 - "$PORT" "$probe_blocked" "$probe_cached" "$t_end" <<'PY'
import random, socket, struct, sys, time
port, blocked, cached, t_end = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
def ask(name):
    qid = random.randrange(65536)
    pkt = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"".join(
        bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0\0\1\0\1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        t = time.time()
        try:
            s.sendto(pkt, ("127.0.0.1", port))
            while True:
                r = s.recv(4096)
                if r[:2] == pkt[:2]:
                    return r[3] & 15, struct.unpack(">H", r[6:8])[0], (time.time() - t) * 1000
        except OSError:
            return -1, 0, 500.0
deadline = time.time() + 30
while time.time() < deadline:
    fresh = f"recovery-{random.randrange(10**9)}.example"
    rb, ab, lb = ask(blocked); rc, ac, lc = ask(cached); rf, af, lf = ask(fresh)
    if rb == 3 and rc == 0 and ac > 0 and rf == 0 and af > 0:
        print(f"{time.time() - t_end:.3f} {lb:.1f} {lc:.1f} {lf:.1f}")
        sys.exit()
    time.sleep(0.05)
print("FAIL NA NA NA")
PY
)
read -r recover_s lat_b lat_c lat_f <<<"$recover"
taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/queries.txt" -l "$RSECS" -Q "$RQPS" \
  -c 20 -q 5000 -t 5 >"$work/recovery-dnsperf.txt" 2>&1 || true
sleep 2
rss_after=$(rss_kb "$spid")
hwm=$(hwm_kb "$spid")
scrape > "$work/metrics.txt"
alive=yes; kill -0 "$spid" 2>/dev/null || alive=no
kill "$sampler" 2>/dev/null || true

# --- report ---------------------------------------------------------------------------------
r() { awk -v k="$1" 'index($0, k) {sub(/^[^:]*: */, ""); print; exit}' "$work/resperf.txt"; }
maxtp=$(r "Maximum throughput:" | awk '{printf "%.0f", $1}')
lostat=$(r "Lost at that point:")
peak_rps=$(awk '!/^#/ && NF >= 4 && $4 > m {m = $4; t = $2; a = $3} END {printf "%.0f (target %.0f, sent %.0f)", m, t, a}' "$work/resperf.plot")
max_sent=$(awk '!/^#/ && NF >= 4 && $3 > m {m = $3} END {printf "%.0f", m}' "$work/resperf.plot")
infl_peak=$(awk '$3 != "NA" && $3 > m {m = $3} END {print m + 0}' "$work/samples.txt")
rss_peak_sampled=$(awk '$2 > m {m = $2} END {print m + 0}' "$work/samples.txt")
# Highest server CPU over any ~1 s window of the samples (ticks / CLK_TCK).
cpu_peak=$(awk -v hz="$(getconf CLK_TCK)" 'NF >= 4 {t[n] = $1; c[n] = $4; n++}
  END {m = 0; for (i = 2; i < n; i++) {d = t[i] - t[i - 2]; if (d > 0) {p = (c[i] - c[i - 2]) / hz / d * 100; if (p > m) m = p}}; printf "%.0f", m}' "$work/samples.txt")
shed=$(metric sinkhole_shed_queries_total "$work/metrics.txt")
upstream_err=$(metric sinkhole_upstream_errors_total "$work/metrics.txt")
cache_entries=$(metric sinkhole_cache_entries "$work/metrics.txt")
queries=$(metric sinkhole_queries_total "$work/metrics.txt")
servfail=$(awk '$1 ~ /^sinkhole_responses_total\{rcode="SERVFAIL"/ {print $NF}' "$work/metrics.txt")
rsent=$(awk '/Queries sent:/ {print $3}' "$work/recovery-dnsperf.txt")
rlost=$(awk '/Queries lost:/ {print $3}' "$work/recovery-dnsperf.txt")
rqps=$(awk '/Queries per second:/ {printf "%.0f", $4}' "$work/recovery-dnsperf.txt")
ravg=$(awk '/Average Latency/ {printf "%.3f", $4 * 1000}' "$work/recovery-dnsperf.txt")

echo "overload: resperf 0 -> $MAXQ qps over ${RAMP}s, max_inflight=$INFL, N=$N, slow=${SLOW}ms; load average before $load0, after $(cut -d' ' -f1-3 /proc/loadavg); $bin ($("$bin" --version 2>/dev/null || echo '?'))"
sed -n '/Statistics:/,$p' "$work/resperf.txt" | sed '/^$/d; s/^/  resperf: /'
echo "max_throughput_qps=$maxtp (loss <= ${MAXLOSS}%, lost at that point $lostat); peak responses/s $peak_rps; max sent/s $max_sent; server_cpu=${cpu_pct}% over the ramp, ${cpu_peak}% at most over ~1 s"
echo "shed_total=$shed inflight_peak_sampled=$infl_peak upstream_errors=$upstream_err servfail=${servfail:-NA} queries_total=$queries cache_entries=$cache_entries"
echo "rss_mb: before=$(mb "$rss_before") peak_sampled=$(mb "$rss_peak_sampled") peak(VmHWM)=$(mb "$hwm") after=$(mb "$rss_after")"
echo "recovery: correct answers ${recover_s}s after the ramp (blocked ${lat_b} ms, cached ${lat_c} ms, new name ${lat_f} ms); then ${RSECS}s at ${RQPS} qps: sent=$rsent lost=$rlost qps=$rqps avg_ms=$ravg; alive_after_ramp=$alive_after_ramp alive=$alive"

fail=()
[ "$alive" = yes ] && [ "$alive_after_ramp" = yes ] || fail+=("sinkhole died")
[ "$recover_s" != FAIL ] || fail+=("no correct answers within 30 s after the ramp")
[ "${rlost:-NA}" = 0 ] || fail+=("lost=$rlost after the ramp")
[ "$hwm" -le $((RSS_LIMIT * 1024)) ] || fail+=("peak RSS $(mb "$hwm") MB > $RSS_LIMIT MB")
if [ ${#fail[@]} -eq 0 ]; then echo "result: PASS"; else echo "result: FAIL: ${fail[*]}"; exit 1; fi
