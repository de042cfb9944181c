#!/usr/bin/env bash
# Reload benchmark: `make bench-reload` (or benches/reload.sh [N...] after
# cargo build --release). Issue 4's figures: time from rename() to
# enforcement and peak RSS during reload, for 3,500 and 1,000,000 names, and
# lost queries under dnsperf load during 20 reloads.
#   targets (checked; exit 1 when one is missed): <= 1 s from the file
#   landing to enforcement (every reload), 0 lost queries, peak RSS during
#   the reloads <= 2x the steady state.
#
# For each N (default: 3500, then 1000000; arguments or RELOAD_N override):
#  * generates, deterministically, N + RELOADS*N/100 blocklist names (mixed
#    TLDs and two-part suffixes, 2-4 labels, no entry under another) and a
#    dnsperf query mix: 20% blocked (90% from names every version keeps, 10%
#    from names that come and go; half of them as subdomains), 80% allowed
#    names drawn Zipf(1) from a 50,000-name pool, 85% A / 15% AAAA;
#  * compiles version 0 into the state_dir (`sinkhole compile --state-dir`),
#    so `serve` starts from that saved snapshot and parses nothing, as a
#    restart under systemd does (RELOAD_START=restart instead starts the
#    server once to save it, stops it and starts it again);
#  * starts an upstream that answers every A/AAAA (dnsdist as in soak.sh and
#    ../shared/peerbench; a small python responder when dnsdist is missing)
#    and sinkhole with `[lists] paths = [the file]`, watch on, a state_dir
#    and an audit directory, as an operator would run it;
#  * runs dnsperf at RELOAD_QPS throughout (timeout 5 s); after
#    RELOAD_WARMUP s takes the steady-state VmRSS and resets VmHWM (writes 5
#    to /proc/PID/clear_refs), so the peak below is the reloads' own;
#  * pushes RELOADS versions, each the previous minus 1% plus 1% new names,
#    written to a temp file in the list's directory and rename()d over it
#    (REL_MODE=sighup / REL_MODE=cmd: with watch off, the rename is followed
#    by SIGHUP / `sinkhole reload --socket` on the control socket). A python
#    probe polls every RELOAD_POLL_MS: enforce_ms = from just before rename()
#    until a name only in the new version answers NXDOMAIN; unblock_ms =
#    until a name the version removed answers NOERROR. Both were resolved
#    before the push (the removed one NXDOMAIN, the new one NOERROR, so the
#    latter sits in the cache). Then (RELOAD_WAIT_MERGE=1, the default) it
#    waits until the server logs that it merged and saved that version, as
#    a push hours later would find it; RELOAD_WAIT_MERGE=0 pushes back to
#    back so pushes stack on an unmerged layer. The next push follows
#    RELOAD_GAP s after that;
#  * samples VmRSS every 10 ms during the reloads and reads VmHWM at the end;
#    stops dnsperf RELOAD_TAIL s after the last reload (> the 5 s timeout,
#    so a query dropped by the last reload counts as lost);
#  * reports per reload the probe times, the server's own figures from its
#    log (took_ms of the reload, change_to_enforced_ms from the first file
#    event), the peak RSS sampled in that reload's window, then
#    min/median/max, dnsperf sent/completed/lost, the lowest 1-second qps
#    during the reloads, and the server's CPU seconds over the reload phase
#    (utime+stime from /proc/PID/stat, all threads), with the same load's
#    CPU rate over the tail after the last reload as the baseline (so CPU
#    per reload); and one summary line per N:
#    N=... reloads=... enforce_ms_median=... max=... lost=... sent=...
#    steady_rss_mb=... peak_rss_mb=... ratio=... server_cpu_s=...
#
# Exit 0 when every target is met, 1 when one is missed (every N still
# runs), 2 on a set-up failure, 130 on Ctrl-C.
# Needs dnsperf (installed from Debian when missing, as root), python3,
# taskset, ss. Loopback only; everything started here is stopped on exit and
# on Ctrl-C (trap); every wait is bounded. Environment (defaults):
#   RELOAD_N="3500 1000000" RELOADS=20 RELOAD_QPS=20000 (dnsperf -Q)
#   REL_MODE=watch (watch | sighup | cmd) RELOAD_START=compile (| restart)
#   RELOAD_WARMUP=15 (s of load before the first reload; at least one pass
#   over the 200,000-query file, so the cache is full) RELOAD_GAP=2 (s)
#   RELOAD_TIMEOUT=60 (s per reload) RELOAD_POLL_MS=5 RELOAD_TAIL=10 (s)
#   RELOAD_PORT=5386 RELOAD_UPSTREAM_PORT=5387 SERVER_CPU=1 CLIENT_CPU=0
#   (the server on one core, dnsperf, upstream and probe on the other, as in
#   soak.sh; SERVER_CPU= CLIENT_CPU= empty: no pinning) KEEP=0 (1: keep the
#   scratch folders) SINKHOLE_BIN (default: release/sinkhole in
#   CARGO_TARGET_DIR, else target/)
set -euo pipefail
if [ $# -gt 0 ]; then NS="$*"; else NS=${RELOAD_N:-3500 1000000}; fi
RELOADS=${RELOADS:-20} QPS=${RELOAD_QPS:-20000} MODE=${REL_MODE:-watch}
START=${RELOAD_START:-compile} WARMUP=${RELOAD_WARMUP:-15} GAP=${RELOAD_GAP:-2}
RTIMEOUT=${RELOAD_TIMEOUT:-60} POLL_MS=${RELOAD_POLL_MS:-5} TAIL=${RELOAD_TAIL:-10}
PORT=${RELOAD_PORT:-5386} UPORT=${RELOAD_UPSTREAM_PORT:-5387}
SERVER_CPU=${SERVER_CPU-1} CLIENT_CPU=${CLIENT_CPU-0}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SINKHOLE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/sinkhole}
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 2; }
case $MODE in watch | sighup | cmd) ;; *) echo "REL_MODE must be watch, sighup or cmd" >&2; exit 2 ;; esac
case $START in compile | restart) ;; *) echo "RELOAD_START must be compile or restart" >&2; exit 2 ;; esac
if [ "$START" = compile ] && ! "$bin" compile --help 2>/dev/null | grep -q -- --state-dir; then
  echo "reload: $bin compile has no --state-dir; using RELOAD_START=restart" >&2
  START=restart
fi
for c in python3 taskset ss; do command -v $c >/dev/null || { echo "reload: $c missing" >&2; exit 2; }; done
if ! command -v dnsperf >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "reload: installing dnsperf" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsperf </dev/null >/dev/null
  else
    echo "reload: dnsperf missing (apt-get install -y dnsperf)" >&2; exit 2
  fi
fi

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# Command prefixes that pin to a core (empty: no pinning). Arrays, not a
# function, so that `$!` of a background job is the program itself.
spin=() cpin=()
[ -z "$SERVER_CPU" ] || spin=(taskset -c "$SERVER_CPU")
[ -z "$CLIENT_CPU" ] || cpin=(taskset -c "$CLIENT_CPU")
port_free() { ! ss -Hlnu "sport = :$1" | grep -q . && ! ss -Hlnt "sport = :$1" | grep -q .; }
cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
tck=$(getconf CLK_TCK)

# --- one N: everything it starts is stopped by its own trap ------------------
run_one() {
  local N=$1
  # Not local: the EXIT trap runs after this function has returned.
  work="" pids=() spid="" dpid=""
  work=$(mktemp -d "/tmp/sinkhole-reload-$N.XXXXXX")
  stop_pid() {  # TERM, up to 5 s, then KILL; only PIDs started here
    local p=$1
    kill -TERM "$p" 2>/dev/null || return 0
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  }
  cleanup() {
    local p
    for p in "${pids[@]}"; do stop_pid "$p"; done
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
  }
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  for p in "$PORT" "$UPORT"; do port_free "$p" || { echo "reload: port $p is busy" >&2; exit 2; }; done
  local load0
  load0=$(cut -d' ' -f1-3 /proc/loadavg)

  # --- data -------------------------------------------------------------------
  mkdir -p "$work/lists" "$work/state" "$work/audit"
  local t
  t=$(date +%s.%N)
  python3 - "$N" "$RELOADS" "$work" <<'PY'
import random, sys
n, reloads, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rnd = random.Random(20261122)
CRYPTO = """bit coin crypto chain block token satoshi ether usdt tether doge shiba
moon rocket hodl lambo whale bull bear mint stake yield swap trade dex cex vault
wallet ledger hash miner node defi gold silver quantum nova stellar astro orbit
apex prime alpha beta gamma delta sigma omega zen flux spark fast quick instant
safe secure trust royal king crown empire global meta neo future cyber fox wolf
lion tiger eagle falcon phoenix dragon titan atlas zeus thor luna sol tron xrp
link sushi cake liquid flash rapid pay cash money bits byte cred capital fund
invest profit gain earn rich wealth asset market bourse broker option margin
leverage spot perp pump hub elite legit verified premier vertex""".split()
PLAIN = """garden kitchen travel recipe weather sports music movie photo video news
daily local city county school college library museum theatre concert bakery
coffee tea pizza burger noodle salad bike hiking camping fishing house rent
hotel flight train bus taxi car repair doctor dental clinic health fitness yoga
running swim tennis golf soccer chess puzzle games toys books story poetry art
design craft paint wood metal glass stone river lake ocean forest mountain
valley island desert spring summer autumn winter morning evening kids family
pets dog cat horse bird fish farm shop store mall outlet fashion shoes shirt
dress style beauty hair nails spa salon wedding party ticket office job career
team group club forum blog wiki docs help learn teach study science math
physics history language radio podcast stream channel studio media press print
paper letter post mail phone mobile tablet laptop software hardware code""".split()
TLDS = ["com", "com", "com", "net", "org", "io", "kz", "xyz", "app", "cc", "info",
        "biz", "top", "site", "online", "pro", "me", "co", "ru", "exchange", "finance"]
TLDS2 = ["com.kz", "co.uk", "com.br", "org.ru", "net.au", "com.tr", "co.in"]
SFX = ["", "", "", "-exchange", "ex", "-ex", "swap", "-swap", "-trade", "dex",
       "-pay", "-coin", "-wallet", "-bit", "-markets", "-crypto", "pro", "-app"]
SUBS = ["www", "api", "m", "app", "wallet", "trade", "login", "cdn", "ws", "my"]
ATLD = ["com", "com", "net", "org", "de", "fr", "uk", "io", "kz", "ru", "info",
        "edu", "co", "nl", "it", "es", "pl"]
ATLD2 = ["co.uk", "com.au", "org.uk", "com.kz", "gov.kz"]
APFX = ["www", "www", "www", "api", "cdn", "m", "img", "static", "mail", "news",
        "shop", "blog"]
taken = set()  # base labels: unique, so no entry lies under another

def base(words, sep_p):
    while True:
        a, b = rnd.choice(words), rnd.choice(words)
        sep = "-" if rnd.random() < sep_p else ""
        lab = f"{a}{sep}{b}{rnd.choice(SFX) if words is CRYPTO else ''}"
        if lab in taken or rnd.random() < 0.15:
            lab = f"{a}{sep}{b}{rnd.randint(1, 99999)}"
        if lab not in taken and len(lab) <= 63:
            taken.add(lab)
            return lab

def blocked():
    b, r = base(CRYPTO, 0.15), rnd.random()
    if r < 0.55:
        return f"{b}.{rnd.choice(TLDS)}"                          # 2 labels
    if r < 0.75:
        return f"{b}.{rnd.choice(TLDS2)}"                         # 3
    if r < 0.90:
        return f"{rnd.choice(SUBS)}.{b}.{rnd.choice(TLDS)}"       # 3
    if r < 0.95:
        return f"{rnd.choice(SUBS)}.{b}.{rnd.choice(TLDS2)}"      # 4
    return f"{rnd.choice(SUBS)}.{rnd.choice(SUBS)}.{b}.{rnd.choice(TLDS)}"  # 4

churn = max(1, n // 100)
total = n + reloads * churn
names = [blocked() for _ in range(total)]
with open(f"{work}/names.txt", "w") as f:       # version k = lines [k*churn, n + k*churn)
    f.write("\n".join(names) + "\n")
with open(f"{work}/lists/blocklist.txt", "w") as f:
    f.write("\n".join(names[:n]) + "\n")
pool = []
for _ in range(50000):
    b, r = base(PLAIN, 0.3), rnd.random()
    if r < 0.5:
        pool.append(f"{rnd.choice(APFX)}.{b}.{rnd.choice(ATLD)}")
    elif r < 0.8:
        pool.append(f"{b}.{rnd.choice(ATLD)}")
    elif r < 0.9:
        pool.append(f"{b}.{rnd.choice(ATLD2)}")
    else:
        pool.append(f"{rnd.choice(APFX)}.{b}.{rnd.choice(ATLD2)}")
stable = names[reloads * churn:n] or names[:n]   # blocked in every version
moving = names[:total]                            # includes names that come and go
cum, acc = [], 0.0
for k in range(len(pool)):
    acc += 1.0 / (k + 1)
    cum.append(acc)
qs = rnd.choices(pool, cum_weights=cum, k=160000)
for i in range(40000):
    b = rnd.choice(moving) if i % 10 == 0 else rnd.choice(stable)
    qs.append(b if i % 2 == 0 else f"{rnd.choice(['www', 'api', 'm', 'cdn', 'a.b'])}.{b}")
rnd.shuffle(qs)
with open(f"{work}/queries.txt", "w") as f:
    for q in qs:
        f.write(f"{q} {'AAAA' if rnd.random() < 0.15 else 'A'}\n")
with open(f"{work}/stable.txt", "w") as f:
    f.write(stable[len(stable) // 2] + "\n")
PY
  local gen_s stable_name
  gen_s=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  stable_name=$(cat "$work/stable.txt")
  log "N=$N: data in ${gen_s}s ($(wc -l <"$work/names.txt") names for $RELOADS versions, $(du -m "$work/lists/blocklist.txt" | cut -f1) MB list)"

  # --- probe (shared by the readiness waits and the reload driver) --------------
  cat >"$work/probe.py" <<'PY'
import os, random, socket, struct, sys, time
def rcode(port, name, timeout=0.5):
    """rcode of NAME/A from 127.0.0.1:PORT, or -1 on timeout."""
    qid = random.randrange(65536)
    pkt = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"".join(
        bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0\0\1\0\1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(pkt, ("127.0.0.1", port))
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                r = s.recv(4096)
                if len(r) >= 12 and r[:2] == pkt[:2]:
                    return r[3] & 15
        except OSError:
            pass
    return -1
def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
if __name__ == "__main__":
    # probe.py PORT NAME RCODE TIMEOUT_S [PID]: wait until NAME answers RCODE
    port, name, want, limit = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    pid = sys.argv[5] if len(sys.argv) > 5 else None
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if rcode(port, name) == want:
            sys.exit(0)
        if pid and not alive(pid):
            sys.exit(2)
        time.sleep(0.01)
    sys.exit(1)
PY

  # --- upstream ---------------------------------------------------------------
  if command -v dnsdist >/dev/null; then
    cat >"$work/upstream.conf" <<EOF
setLocal("127.0.0.1:$UPORT")
setSecurityPollSuffix("")
addAction(OrRule({QTypeRule(DNSQType.A), QTypeRule(DNSQType.AAAA)}), SpoofAction({"192.0.2.1","2001:db8::1"}, {ttl=3600}))
addAction(AllRule(), RCodeAction(DNSRCode.NOERROR))
EOF
    "${cpin[@]}" dnsdist --supervised --disable-syslog -C "$work/upstream.conf" >"$work/upstream.log" 2>&1 &
  else
    cat >"$work/upstream.py" <<'PY'
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    q, a = s.recvfrom(4096)
    if len(q) < 12: continue
    i = 12
    while i < len(q) and q[i]: i += 1 + q[i]
    qt = struct.unpack("!H", q[i+1:i+3])[0] if i + 5 <= len(q) else 0
    ans = b""
    if qt == 1: ans = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04" + bytes([192, 0, 2, 1])
    elif qt == 28: ans = b"\xc0\x0c\x00\x1c\x00\x01\x00\x00\x0e\x10\x00\x10" + bytes.fromhex("20010db8000000000000000000000001")
    flags = 0x8180 | (struct.unpack("!H", q[2:4])[0] & 0x0110)
    s.sendto(q[:2] + struct.pack("!HHHHH", flags, 1, 1 if ans else 0, 0, 0) + q[12:i + 5] + ans, a)
PY
    "${cpin[@]}" python3 "$work/upstream.py" "$UPORT" >"$work/upstream.log" 2>&1 &
  fi
  local upid=$!
  pids+=("$upid")
  python3 "$work/probe.py" "$UPORT" upstream.check 0 10 "$upid" || { echo "reload: upstream did not start" >&2; cat "$work/upstream.log" >&2; exit 2; }

  # --- sinkhole -----------------------------------------------------------------
  local watch=true sock=""
  [ "$MODE" = watch ] || watch=false
  [ "$MODE" = cmd ] && sock="$work/control.sock"
  cat >"$work/sinkhole.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
workers = 0
control_socket = "$sock"
[upstream]
servers = ["127.0.0.1:$UPORT"]
[lists]
paths = ["$work/lists/blocklist.txt"]
watch = $watch
state_dir = "$work/state"
[policy]
action = "nxdomain"
[audit]
path = "$work/audit"
EOF
  local first_name ready_s start_note compile_s=NA
  first_name=$(head -1 "$work/lists/blocklist.txt")
  start_server() {  # start_server LOG: start, wait (bounded) until a listed name is blocked
    local t0
    t0=$(date +%s.%N)
    "${spin[@]}" "$bin" serve --config "$work/sinkhole.toml" >"$1" 2>&1 &
    spid=$!
    pids+=("$spid")
    if ! python3 "$work/probe.py" "$PORT" "$first_name" 3 300 "$spid"; then
      echo "reload: sinkhole did not come up" >&2; tail -20 "$1" >&2; exit 2
    fi
    ready_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f", b - a}')
  }
  if [ "$START" = compile ]; then
    t=$(date +%s.%N)
    "$bin" compile --list "$work/lists/blocklist.txt" -o "$work/compiled.snap" --state-dir "$work/state" \
      >"$work/compile.log" 2>&1 || { cat "$work/compile.log" >&2; exit 2; }
    compile_s=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    rm -f "$work/compiled.snap"
    start_note="saved snapshot from \`sinkhole compile --state-dir\` (${compile_s}s)"
  else
    start_server "$work/sinkhole-first.log"
    stop_pid "$spid"
    start_note="saved snapshot from a first start (ready in ${ready_s}s, parsed the list), then restarted"
  fi
  start_server "$work/sinkhole.log"
  if grep -q 'using the saved snapshot' "$work/sinkhole.log"; then
    start_note="start-up from the $start_note"
  else
    start_note="start-up PARSED THE LIST (saved snapshot not used: $start_note)"
  fi
  local hwm_start rss_start
  hwm_start=$(status_kb "$spid" VmHWM) rss_start=$(status_kb "$spid" VmRSS)
  log "N=$N: sinkhole ready in ${ready_s}s, rss $(mb "$rss_start") MB, hwm $(mb "$hwm_start") MB; $start_note"

  # --- load, warm-up, steady state --------------------------------------------
  local max_s=$((WARMUP + RELOADS * (RTIMEOUT + GAP + 5) + TAIL + 60))
  "${cpin[@]}" dnsperf -s 127.0.0.1 -p "$PORT" -d "$work/queries.txt" -l "$max_s" \
    -c 20 -q 500 -Q "$QPS" -t 5 -S 1 >"$work/dnsperf.txt" 2>&1 &
  dpid=$!
  pids+=("$dpid")
  log "N=$N: dnsperf at $QPS qps; ${WARMUP}s warm-up"
  local rss_steady hwm_reset=yes
  sleep "$WARMUP"
  rss_steady=$(status_kb "$spid" VmRSS)
  local hwm_before_reset
  hwm_before_reset=$(status_kb "$spid" VmHWM)
  { echo 5 >"/proc/$spid/clear_refs"; } 2>/dev/null || hwm_reset=no
  kill -0 "$dpid" 2>/dev/null || { echo "reload: dnsperf stopped early" >&2; cat "$work/dnsperf.txt" >&2; exit 2; }
  log "N=$N: steady rss $(mb "$rss_steady") MB (hwm so far $(mb "$hwm_before_reset") MB, reset: $hwm_reset); $RELOADS reloads ($MODE)"

  # --- reloads --------------------------------------------------------------------
  local c0 c1 t_first t_last
  c0=$(cpu_ticks "$spid")
  cat >"$work/driver.py" <<'PY'
import os, signal, statistics, subprocess, sys, threading, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probe import rcode, alive
(work, port, spid, n, reloads, mode, binpath, sock, gap, limit, poll_ms) = sys.argv[1:12]
port, n, reloads = int(port), int(n), int(reloads)
gap, limit, poll = float(gap), float(limit), float(poll_ms) / 1000
churn = max(1, n // 100)
names = open(f"{work}/names.txt").read().split("\n")
target = f"{work}/lists/blocklist.txt"
tmp = f"{work}/lists/.blocklist.txt.tmp"

def rss():
    try:
        with open(f"/proc/{spid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0
wait_merge = os.environ.get("RELOAD_WAIT_MERGE", "1") == "1"
def log_lines():
    import re
    try:
        with open(f"{work}/sinkhole.log", errors="replace") as f:
            return [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in f.read().splitlines()]
    except OSError:
        return []
def merged_count():
    return sum("merged and saved" in l for l in log_lines())
def full_reloads():
    return sum("lists reloaded" in l and "incremental=false" in l for l in log_lines())
window_max = [0]
stop = threading.Event()
def sampler():
    with open(f"{work}/rss.csv", "w") as out:
        while not stop.is_set():
            r = rss()
            window_max[0] = max(window_max[0], r)
            out.write(f"{time.time():.3f},{r}\n")
            time.sleep(0.01)
threading.Thread(target=sampler, daemon=True).start()

print("k,t_rename,enforce_ms,unblock_ms,cmd_ms,cmd_rc,precheck,window_peak_rss_kb", flush=True)
rows = []
for k in range(1, reloads + 1):
    new, removed = names[n + k * churn - 1], names[(k - 1) * churn]
    # Before: the new name resolves (and so is cached), the removed one is blocked.
    pre = "BAD"
    for _ in range(5):  # a probe can time out on a busy machine: retry
        if rcode(port, new) == 0 and rcode(port, removed) == 3:
            pre = "ok"
            break
        time.sleep(0.2)
    with open(tmp, "w") as f:
        f.write("\n".join(names[k * churn:n + k * churn]) + "\n")
    merged_before, full_before = merged_count(), full_reloads()
    if rows:
        rows[-1][-1] = window_max[0]
    window_max[0] = 0
    t_wall = time.time()
    t0 = time.monotonic()
    os.replace(tmp, target)
    cmd = None
    if mode == "sighup":
        os.kill(int(spid), signal.SIGHUP)
    elif mode == "cmd":
        cmd = subprocess.Popen([binpath, "reload", "--socket", sock], stdout=open(f"{work}/reload-cmd.txt", "a"),
                               stderr=subprocess.STDOUT)
    enforce = unblock = cmd_ms = None
    cmd_rc = ""
    while time.monotonic() - t0 < limit:
        if enforce is None and rcode(port, new) == 3:
            enforce = (time.monotonic() - t0) * 1000
        if unblock is None and rcode(port, removed) == 0:
            unblock = (time.monotonic() - t0) * 1000
        if cmd is not None and cmd_ms is None and cmd.poll() is not None:
            cmd_ms, cmd_rc = (time.monotonic() - t0) * 1000, cmd.returncode
        if enforce is not None and unblock is not None and (cmd is None or cmd_ms is not None):
            break
        if not alive(spid):
            print("sinkhole died", file=sys.stderr)
            break
        time.sleep(poll)
    if cmd is not None and cmd_ms is None:
        cmd.kill(); cmd.wait(); cmd_rc = "timeout"
    f = lambda v: "NA" if v is None else f"{v:.0f}"
    rows.append([k, f"{t_wall:.3f}", f(enforce), f(unblock), f(cmd_ms), cmd_rc, pre, 0])
    print(f"  reload {k}/{reloads}: enforce_ms={f(enforce)} unblock_ms={f(unblock)}"
          + (f" cmd_ms={f(cmd_ms)} rc={cmd_rc}" if mode == "cmd" else "") + f" precheck={pre}",
          file=sys.stderr, flush=True)
    if enforce is None or unblock is None or not alive(spid):
        break
    if wait_merge:
        # As pushes arrive in service (hours apart), let the server finish
        # merging and saving this version before the next push; pushes that
        # come faster stack on the unmerged layer (RELOAD_WAIT_MERGE=0).
        t_m = time.monotonic()
        while time.monotonic() - t_m < 120 and merged_count() <= merged_before and alive(spid):
            if full_reloads() > full_before:
                break
            time.sleep(0.05)
    time.sleep(gap)
if rows:
    rows[-1][-1] = window_max[0]
stop.set()
for r in rows:
    print(",".join(str(x) for x in r))
print(f"end,{time.time():.3f},,,,,,", flush=True)
PY
  local log_lines0
  log_lines0=$(wc -l <"$work/sinkhole.log")
  t_first=$(date +%s.%N)
  "${cpin[@]}" python3 "$work/driver.py" "$work" "$PORT" "$spid" "$N" "$RELOADS" "$MODE" "$bin" \
    "$sock" "$GAP" "$RTIMEOUT" "$POLL_MS" >"$work/reloads.csv" || true
  t_last=$(date +%s.%N)
  c1=$(cpu_ticks "$spid")
  local hwm_end rss_end alive=yes
  hwm_end=$(status_kb "$spid" VmHWM) rss_end=$(status_kb "$spid" VmRSS)
  kill -0 "$spid" 2>/dev/null || alive=no
  # A stable name must still be blocked, the last version's new name too.
  local post=ok
  python3 "$work/probe.py" "$PORT" "$stable_name" 3 2 || post="stable name not blocked"
  log "N=$N: reloads done; ${TAIL}s more load, then dnsperf stops"
  # The tail (no reload, cache warm) gives the load's own CPU rate: the baseline.
  local c_a c_b
  c_a=$(cpu_ticks "$spid")
  sleep "$TAIL"
  c_b=$(cpu_ticks "$spid")
  kill -INT "$dpid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
  stop_pid "$dpid"

  # --- report ---------------------------------------------------------------------
  local phase_s cpu_s base_cpu_s
  phase_s=$(awk -v a="$t_first" -v b="$t_last" 'BEGIN {printf "%.1f", b - a}')
  cpu_s=$(awk -v d="$((c1 - c0))" -v h="$tck" 'BEGIN {printf "%.1f", d / h}')
  local base_pct
  base_pct=$(awk -v d="$((c_b - c_a))" -v s="$TAIL" -v h="$tck" 'BEGIN {printf "%.1f", (s > 0 ? 100 * d / h / s : 0)}')
  base_cpu_s=$(awk -v p="$base_pct" -v s="$phase_s" 'BEGIN {printf "%.1f", p * s / 100}')
  # Server-side figures from its log (lines written since the first push).
  tail -n +"$((log_lines0 + 1))" "$work/sinkhole.log" | sed 's/\x1b\[[0-9;]*m//g' >"$work/reload.log"
  grep 'lists reloaded' "$work/reload.log" | grep -o 'took_ms=[0-9]*' | cut -d= -f2 >"$work/took.txt" || true
  grep -o 'change_to_enforced_ms=[0-9]*' "$work/reload.log" | cut -d= -f2 >"$work/c2e.txt" || true
  local sent completed lost interrupted qps rcodes
  sent=$(awk '/Queries sent:/ {print $3}' "$work/dnsperf.txt")
  completed=$(awk '/Queries completed:/ {print $3}' "$work/dnsperf.txt")
  lost=$(awk '/Queries lost:/ {print $3}' "$work/dnsperf.txt")
  interrupted=$(awk '/Queries interrupted:/ {print $3}' "$work/dnsperf.txt")
  qps=$(awk '/Queries per second:/ {printf "%.0f", $4}' "$work/dnsperf.txt")
  rcodes=$(awk '/Response codes:/ {sub(/^.*Response codes: */, ""); print}' "$work/dnsperf.txt")
  local minq
  minq=$(awk -v a="$t_first" -v b="$t_last" '/^[0-9]+\.[0-9]+: [0-9.]+$/ {t = $1 + 0; if (t > a + 1 && t <= b) {v = $2 + 0; if (m == "" || v < m) m = v}} END {print (m == "" ? "NA" : sprintf("%.0f", m))}' "$work/dnsperf.txt")
  local rss_sampled
  rss_sampled=$(awk -F, '$2 > m {m = $2} END {print m + 0}' "$work/rss.csv" 2>/dev/null || echo 0)
  local peak=$hwm_end peak_note="VmHWM reset after warm-up"
  if [ "$hwm_reset" = no ]; then
    # VmHWM could not be reset: it includes start-up; the sampled peak does not.
    peak=$rss_sampled peak_note="sampled VmRSS (VmHWM not resettable; VmHWM incl. start-up $(mb "$hwm_end") MB)"
  fi

  echo
  echo "== reload benchmark N=$N, $RELOADS reloads ($MODE), dnsperf -Q $QPS; $bin ($("$bin" --version 2>/dev/null || echo '?'))"
  echo "load average before $load0, after $(cut -d' ' -f1-3 /proc/loadavg); data ${gen_s}s; $start_note; ready in ${ready_s}s"
  echo "reload  enforce_ms  unblock_ms  server_took_ms  server_change_to_enforced_ms  peak_rss_mb$([ "$MODE" = cmd ] && echo '  cmd_ms rc')  precheck"
  awk -F, -v mode="$MODE" -v tookf="$work/took.txt" -v c2ef="$work/c2e.txt" '
    BEGIN {while ((getline l < tookf) > 0) took[++nt] = l; while ((getline l < c2ef) > 0) c2e[++nc] = l}
    $1 ~ /^[0-9]+$/ {
      k = $1; tk = took[k]; if (tk == "") tk = "NA"; ce = c2e[k]; if (ce == "" || mode != "watch") ce = "-"
      printf "%6d  %10s  %10s  %14s  %28s  %11.1f%s  %s\n", k, $3, $4, tk, ce, $8 / 1024, (mode == "cmd" ? sprintf("  %6s %2s", $5, $6) : ""), $7
    }' "$work/reloads.csv"
  stats() {  # stats COLUMN: "count min median max" over numeric values
    awk -F, -v c="$1" '$1 ~ /^[0-9]+$/ && $c ~ /^[0-9]+$/ {print $c}' "$work/reloads.csv" | sort -n |
      awk '{v[++n] = $1} END {if (!n) {print "0 NA NA NA"; exit}; m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2; printf "%d %d %.0f %d\n", n, v[1], m, v[n]}'
  }
  local en emin emed emax un umin umed umax done_k bad_pre
  read -r en emin emed emax < <(stats 3)
  read -r un umin umed umax < <(stats 4)
  done_k=$(awk -F, '$1 ~ /^[0-9]+$/' "$work/reloads.csv" | wc -l)
  bad_pre=$(awk -F, '$1 ~ /^[0-9]+$/ && $7 != "ok"' "$work/reloads.csv" | wc -l)
  local tmin tmed tmax
  read -r _ tmin tmed tmax < <(sort -n "$work/took.txt" | awk '{v[++n] = $1} END {if (!n) {print "0 NA NA NA"; exit}; m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2; printf "%d %d %.0f %d\n", n, v[1], m, v[n]}')
  echo "enforce_ms (new name NXDOMAIN, from before rename): min=$emin median=$emed max=$emax over $en/$RELOADS"
  echo "unblock_ms (removed name NOERROR): min=$umin median=$umed max=$umax over $un/$RELOADS; server took_ms: min=$tmin median=$tmed max=$tmax"
  local ratio
  ratio=$(awk -v p="$peak" -v s="$rss_steady" 'BEGIN {printf "%.2f", (s > 0 ? p / s : 0)}')
  echo "rss_mb: at ready=$(mb "$rss_start") (VmHWM at ready $(mb "$hwm_start"), after warm-up $(mb "$hwm_before_reset")) steady(after ${WARMUP}s warm-up)=$(mb "$rss_steady") peak during reloads=$(mb "$peak") [$peak_note] sampled max (10 ms)=$(mb "$rss_sampled") end=$(mb "$rss_end") ratio=$ratio"
  echo "dnsperf: sent=$sent completed=$completed lost=$lost${interrupted:+ interrupted=$interrupted} qps=$qps min_1s_qps_during_reloads=$minq rcodes: $rcodes"
  echo "server cpu: ${cpu_s}s over the ${phase_s}s reload phase (the same load without reloads, measured over the ${TAIL}s after them: ${base_pct}% of a core = ~${base_cpu_s}s; so ~$(awk -v a="$cpu_s" -v b="$base_cpu_s" -v k="$done_k" 'BEGIN {printf "%.2f", (k ? (a - b) / k : 0)}') s per reload)"
  local line
  line="N=$N reloads=$done_k enforce_ms_median=$emed max=$emax unblock_ms_median=$umed max=$umax lost=${lost:-NA} sent=${sent:-NA} steady_rss_mb=$(mb "$rss_steady") peak_rss_mb=$(mb "$peak") ratio=$ratio server_cpu_s=$cpu_s mode=$MODE"
  echo "$line"
  [ -z "${RELOAD_SUMMARY:-}" ] || echo "$line" >>"$RELOAD_SUMMARY"

  local fail=()
  [ "$done_k" = "$RELOADS" ] && [ "$en" = "$RELOADS" ] && [ "$un" = "$RELOADS" ] || fail+=("only $en/$un of $RELOADS reloads enforced within ${RTIMEOUT}s")
  [ "$bad_pre" = 0 ] || fail+=("$bad_pre reloads whose names were in the wrong state before the push")
  [ "$alive" = yes ] || fail+=("sinkhole died")
  [ "$post" = ok ] || fail+=("$post")
  [ "$emax" != NA ] && [ "$emax" -le 1000 ] || fail+=("enforce max ${emax} ms > 1000")
  [ "$umax" != NA ] && [ "$umax" -le 1000 ] || fail+=("unblock max ${umax} ms > 1000")
  [ "${lost:-NA}" = 0 ] || fail+=("lost=${lost:-NA}")
  awk -v r="$ratio" 'BEGIN {exit !(r > 0 && r <= 2)}' || fail+=("peak/steady rss ${ratio} > 2")
  if [ ${#fail[@]} -eq 0 ]; then echo "result N=$N: PASS"; else
    echo "result N=$N: FAIL: $(IFS=';'; echo "${fail[*]}")"; exit 1; fi
}

# Each N runs in its own process (this script with RELOAD_ONE=N): its own
# `set -e`, traps and clean-up, and Ctrl-C reaches it directly.
if [ -n "${RELOAD_ONE:-}" ]; then
  run_one "$RELOAD_ONE"
  exit 0
fi
summaries=$(mktemp /tmp/sinkhole-reload-summary.XXXXXX)
trap 'rm -f "$summaries"' EXIT
trap 'exit 130' INT TERM
rc=0
for n in $NS; do
  case $n in '' | *[!0-9]*) echo "reload: N must be a number, got '$n'" >&2; exit 2 ;; esac
  if RELOAD_ONE=$n RELOAD_SUMMARY=$summaries SINKHOLE_BIN=$bin REL_MODE=$MODE RELOAD_START=$START bash "$0"; then :; else
    r=$?
    case $r in 1) rc=1 ;; 130) exit 130 ;; *) exit "$r" ;; esac
  fi
done
echo
echo "summary ($MODE, $RELOADS reloads, dnsperf -Q $QPS):"
cat "$summaries"
exit "$rc"
