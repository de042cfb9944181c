#!/usr/bin/env bash
# Soak test: `make soak` (or benches/soak.sh after cargo build --release).
#
# SOAK_SECONDS (default 600) of steady dnsperf load against the release
# binary while a new version of the list is pushed every SOAK_RELOAD_EVERY
# seconds (default 5), alternating between two versions (B = A minus 1% plus
# 1% new names) by writing a temp file and renaming it over the list, as a
# regulator's push does; sinkhole notices the rename by itself. The audit log
# is on (a directory), metrics on a loopback port.
#
# Reports, and checks against the targets (exit 1 when one is missed):
#   lost queries (dnsperf)                        target 0
#   RSS after warm-up vs at the end               target: end within +10%
#   pushes applied (a name only in the pushed version flips, polled every
#   10 ms; sinkhole_list_reloads_total, which counts the initial load too)
#                                                 target: every push
#   `sinkhole audit verify` after SIGTERM         target: intact, 0 declared
#   lost; hits in the log == sinkhole_blocked_total; audit lost metric 0
#   exit after SIGTERM                            target: 0 within 5 s
#
# Needs dnsperf, dnsdist (upstream, as in ../shared/peerbench), dig,
# python3, taskset; installs the Debian packages dnsperf, dnsdist and
# bind9-dnsutils when missing (as root). Loopback only; everything started
# here is stopped on exit (trap). Environment (defaults):
#   SOAK_SECONDS=600 SOAK_RELOAD_EVERY=5 SOAK_N=100000 (list size)
#   SOAK_QPS=20000 (dnsperf -Q) SOAK_WARMUP=30 (s; RSS "start" sample)
#   SOAK_PORT=5392 SOAK_UPSTREAM_PORT=5393 SOAK_METRICS_PORT=5394
#   SERVER_CPU=1 CLIENT_CPU=0 KEEP=0 (1: keep the scratch folder)
#   SINKHOLE_BIN (default target/release/sinkhole)
set -euo pipefail
SECS=${SOAK_SECONDS:-600} EVERY=${SOAK_RELOAD_EVERY:-5} N=${SOAK_N:-100000}
QPS=${SOAK_QPS:-20000} WARMUP=${SOAK_WARMUP:-30}
PORT=${SOAK_PORT:-5392} UPORT=${SOAK_UPSTREAM_PORT:-5393} MPORT=${SOAK_METRICS_PORT:-5394}
SERVER_CPU=${SERVER_CPU:-1} CLIENT_CPU=${CLIENT_CPU:-0}
[ "$WARMUP" -lt "$SECS" ] || WARMUP=$((SECS / 10))
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SINKHOLE_BIN:-$root/target/release/sinkhole}
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 2; }

missing=()
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v dnsdist >/dev/null || missing+=(dnsdist)
command -v dig >/dev/null || missing+=(bind9-dnsutils)
. "$root/benches/lib.sh"
bench_install soak ${missing[@]+"${missing[@]}"}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
bench_workdir soak
metric() {  # sum of a metric's samples (all label sets)
  python3 - "$MPORT" "$1" <<'PY'
import sys, urllib.request
port, name = sys.argv[1], sys.argv[2]
try:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
except Exception:
    print("NA"); sys.exit()
tot, seen = 0.0, False
for line in body.splitlines():
    if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
        tot += float(line.rsplit(" ", 1)[1]); seen = True
print(f"{tot:.0f}" if seen else "NA")
PY
}

# --- data: two list versions, queries, marker names ---------------------------
mkdir -p "$work/lists" "$work/stage" "$work/audit" "$work/state"
python3 - "$N" "$work" <<'PY'
import random, sys
n, work = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(7)
words = ["alpha","bit","coin","dex","fast","gold","hash","moon","node","pay","quant","rich","safe","token","trade","vault","yield","zen"]
tlds = ["kz","io","xyz","com","net","org","app","cc"]
def name(i, salt):
    return f"{words[i % 18]}{words[(i // 18) % 18]}{i}-{salt}.{tlds[i % 8]}"
churn = max(1, n // 100)
common = [name(i, "exchange") for i in range(churn, n)]
a_only = [name(i, "exchange") for i in range(churn)]
b_only = [name(i, "swap") for i in range(churn)]
open(f"{work}/list-a.txt", "w").write("\n".join(a_only + common) + "\n")
open(f"{work}/list-b.txt", "w").write("\n".join(common + b_only) + "\n")
open(f"{work}/markers", "w").write(f"{a_only[-1]} {b_only[-1]}\n")
pool = [name(i, "shop") for i in range(50000)]
allowed = rnd.choices(pool, weights=[1.0 / (k + 1) for k in range(len(pool))], k=160000)
subs = ["www.", "api.", "m.", "cdn.", "a.b."]
qs = []
for i in range(40000):
    # 20% blocked: mostly names in both versions, some that flip with each push
    b = rnd.choice(a_only + b_only) if i % 20 == 0 else rnd.choice(common)
    qs.append(b if i % 2 == 0 else rnd.choice(subs) + b)
qs += allowed
rnd.shuffle(qs)
with open(f"{work}/queries.txt", "w") as f:
    for q in qs:
        f.write(f"{q} {'AAAA' if rnd.random() < 0.15 else 'A'}\n")
PY
cp "$work/list-a.txt" "$work/lists/blocklist.txt"
read -r marker_a marker_b < "$work/markers"

# --- upstream (dnsdist spoofing A/AAAA, as peerbench) -------------------------
cat > "$work/upstream.conf" <<EOF
setLocal("127.0.0.1:$UPORT")
setSecurityPollSuffix("")
addAction(OrRule({QTypeRule(DNSQType.A), QTypeRule(DNSQType.AAAA)}), SpoofAction({"192.0.2.1","2001:db8::1"}, {ttl=3600}))
addAction(AllRule(), RCodeAction(DNSRCode.NOERROR))
EOF
taskset -c "$CLIENT_CPU" dnsdist --supervised --disable-syslog -C "$work/upstream.conf" >"$work/upstream.log" 2>&1 &
pids+=($!)

# --- sinkhole ----------------------------------------------------------------
cat > "$work/sinkhole.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
workers = 0
control_socket = ""
[upstream]
servers = ["127.0.0.1:$UPORT"]
[lists]
paths = ["$work/lists/blocklist.txt"]
state_dir = "$work/state"
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
  dig +tries=1 +time=1 -p "$PORT" @127.0.0.1 "www.$marker_a" A 2>/dev/null | grep -q NXDOMAIN && break
  kill -0 "$spid" 2>/dev/null || { cat "$work/sinkhole.log" >&2; exit 2; }
  sleep 0.01
done
rss_loaded=$(rss_kb "$spid")
log "sinkhole up (N=$N, rss $((rss_loaded / 1024)) MB); ${SECS}s of dnsperf at ${QPS} qps, a push every ${EVERY}s"

# --- load + pushes -------------------------------------------------------------
taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/queries.txt" -l "$SECS" \
  -c 20 -q 500 -Q "$QPS" -t 5 -S 10 >"$work/dnsperf.txt" 2>&1 &
dpid=$!
pids+=($dpid)
t_start=$(date +%s.%N)
taskset -c "$CLIENT_CPU" python3 - "$work" "$PORT" "$spid" "$SECS" "$EVERY" "$WARMUP" "$marker_a" "$marker_b" \
  > "$work/pushes.csv" <<'PY'
# Push a version every EVERY s; poll until the marker flips; sample RSS.
import os, random, shutil, socket, struct, sys, time
work, port, spid, secs, every, warmup = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
marker_a, marker_b = sys.argv[7], sys.argv[8]
def rcode(name):
    qid = random.randrange(65536)
    pkt = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"".join(
        bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0\0\1\0\1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(pkt, ("127.0.0.1", port))
            while True:
                r = s.recv(4096)
                if r[:2] == pkt[:2]:
                    return r[3] & 15
        except OSError:
            return -1
def rss():
    with open(f"/proc/{spid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
t0 = time.time()
print("t_s,event,version,apply_ms,rss_kb", flush=True)
warm_done = False
k = 0
while True:
    k += 1
    at = t0 + k * every
    if at > t0 + secs - 1:
        break
    while time.time() < at:
        if not warm_done and time.time() - t0 >= warmup:
            print(f"{time.time() - t0:.1f},warm,,,{rss()}", flush=True)
            warm_done = True
        time.sleep(min(0.1, max(0.0, at - time.time())))
    ver = "b" if k % 2 == 1 else "a"
    shutil.copyfile(f"{work}/list-{ver}.txt", f"{work}/stage/blocklist.txt")
    t = time.time()
    os.replace(f"{work}/stage/blocklist.txt", f"{work}/lists/blocklist.txt")
    # B blocks www.marker_b and not marker_a; A the other way round.
    want_b, want_a = (3, 0) if ver == "b" else (0, 3)
    applied = None
    while time.time() - t < every - 0.5:
        if rcode("www." + marker_b) == want_b and rcode(marker_a) == want_a:
            applied = (time.time() - t) * 1000
            break
        time.sleep(0.01)
    print(f"{t - t0:.1f},push,{ver},{'NA' if applied is None else f'{applied:.0f}'},{rss()}", flush=True)
print(f"{time.time() - t0:.1f},end,,,{rss()}", flush=True)
PY
wait "$dpid" || true
rss_end=$(rss_kb "$spid")
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$spid/status")
reloads=$(metric sinkhole_list_reloads_total)
reload_fail=$(metric sinkhole_list_reload_failures_total)
blocked=$(metric sinkhole_blocked_total)
a_written=$(metric sinkhole_audit_records_written_total)
a_lost=$(metric sinkhole_audit_records_lost_total)
a_errors=$(metric sinkhole_audit_write_errors_total)
shed=$(metric sinkhole_shed_queries_total)
version=$(metric sinkhole_list_version)

# --- graceful stop, then the audit log ---------------------------------------
t=$(date +%s.%N)
kill -TERM "$spid"
stop_rc=timeout
for _ in $(seq 1 100); do
  if ! kill -0 "$spid" 2>/dev/null; then
    if wait "$spid"; then stop_rc=0; else stop_rc=$?; fi
    break
  fi
  sleep 0.1
done
stop_s=$(echo "$(date +%s.%N) - $t" | bc)
if [ "$stop_rc" = timeout ]; then kill -KILL "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; fi
tv=$(date +%s.%N)
if "$bin" audit verify "$work/audit" >"$work/verify.txt" 2>&1; then verify_rc=0; else verify_rc=$?; fi
verify_s=$(echo "$(date +%s.%N) - $tv" | bc)
"$bin" audit verify --json "$work/audit" >"$work/verify.json" 2>/dev/null || true
read -r v_records v_hits v_lost v_files < <(python3 -c '
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    print(r.get("records", "NA"), r.get("hits", "NA"), r.get("lost", "NA"), r.get("files", "NA"))
except Exception:
    print("NA NA NA NA")' "$work/verify.json")
audit_mb=$(du -sm "$work/audit" | cut -f1)

# --- report --------------------------------------------------------------------
sent=$(awk '/Queries sent:/ {print $3}' "$work/dnsperf.txt")
completed=$(awk '/Queries completed:/ {print $3}' "$work/dnsperf.txt")
lost=$(awk '/Queries lost:/ {print $3}' "$work/dnsperf.txt")
qps=$(awk '/Queries per second:/ {print $4}' "$work/dnsperf.txt")
rcodes=$(awk '/Response codes:/ {sub(/^.*Response codes: */, ""); print}' "$work/dnsperf.txt")
rss_warm=$(awk -F, '$2 == "warm" {print $5}' "$work/pushes.csv")
rss_warm=${rss_warm:-$rss_loaded}
pushes=$(awk -F, '$2 == "push"' "$work/pushes.csv" | wc -l)
applied=$(awk -F, '$2 == "push" && $4 != "NA"' "$work/pushes.csv" | wc -l)
apply_stats=$(awk -F, '$2 == "push" && $4 != "NA" {n++; s += $4; if ($4 > m) m = $4} END {if (n) printf "avg %.0f ms, max %.0f ms", s / n, m; else print "-"}' "$work/pushes.csv")
rss_max=$(awk -F, 'NR > 1 && $5 > m {m = $5} END {print m + 0}' "$work/pushes.csv")
growth=$(awk -v a="$rss_warm" -v b="$rss_end" 'BEGIN {printf "%+.1f", (b - a) * 100 / a}')

echo "soak: ${SECS}s at ${QPS} qps target, N=$N, a push every ${EVERY}s; load average before $load0, after $(cut -d' ' -f1-3 /proc/loadavg); $bin ($("$bin" --version 2>/dev/null || echo '?'))"
echo "queries: sent=$sent completed=$completed lost=$lost qps=$qps rcodes: $rcodes"
echo "rss_mb: loaded=$(mb "$rss_loaded") after_warmup(${WARMUP}s)=$(mb "$rss_warm") end=$(mb "$rss_end") max_sampled=$(mb "$rss_max") peak(VmHWM)=$(mb "$hwm") growth=${growth}%"
echo "reloads: pushed=$pushes applied_within_push_interval=$applied ($apply_stats) sinkhole_list_reloads_total=$reloads (incl. the initial load) failures=$reload_fail list_version=$version"
echo "audit: blocked_total=$blocked written_total=$a_written lost_total=$a_lost write_errors=$a_errors; log ${audit_mb} MB in $v_files file(s): records=$v_records hits=$v_hits declared_lost=$v_lost; verify rc=$verify_rc in ${verify_s}s"
sed 's/^/  verify: /' "$work/verify.txt"
echo "shutdown: SIGTERM -> exit $stop_rc in ${stop_s}s; shed_total=$shed"

fail=()
[ "$lost" = 0 ] || fail+=("lost=$lost")
awk -v g="$growth" 'BEGIN {exit !(g <= 10)}' || fail+=("rss growth ${growth}%")
[ "$applied" = "$pushes" ] || fail+=("applied $applied of $pushes pushes")
# The initial load counts as reload 1 (version 1).
[ "$reloads" = "$((pushes + 1))" ] || fail+=("reloads_total=$reloads != 1 + pushes=$pushes")
[ "$verify_rc" = 0 ] || fail+=("audit verify rc=$verify_rc")
[ "$v_lost" = 0 ] || fail+=("audit declared lost=$v_lost")
[ "$a_lost" = 0 ] || fail+=("audit lost metric=$a_lost")
[ "$v_hits" = "$blocked" ] || fail+=("audit hits $v_hits != blocked_total $blocked")
[ "$stop_rc" = 0 ] || fail+=("SIGTERM exit=$stop_rc")
awk -v s="$stop_s" 'BEGIN {exit !(s <= 5)}' || fail+=("shutdown took ${stop_s}s")
if [ ${#fail[@]} -eq 0 ]; then echo "result: PASS"; else echo "result: FAIL: ${fail[*]}"; exit 1; fi
