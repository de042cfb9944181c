#!/usr/bin/env bash
# Push benchmark (issue 13): push-to-enforced time of a signed list through
# the push API, for 3,500 and 1,000,000 names (arguments or PUSH_N
# override), three pushes each:
#   v1  the first version (nothing of the list in force),
#   v2  1% of the names replaced (a ministry's daily change),
#   v3  a full replacement (every name new, same count).
# For each push: the receipt's took_ms (server side, from the end of the
# upload to the receipt: signature, version, parse, guards, reload, the
# change record and its fsync), the client's wall time (curl, upload over
# loopback included), the server's CPU time for the push (user + system:
# on a loaded machine wall time is mostly waiting for a core), added/removed, and a check with dig that a name only
# in the new version answers NXDOMAIN once the receipt is back. The server's
# peak RSS (VmHWM) is reported at the end of each N.
#   target: a 1% push at 1M enforced <= 1 s after the upload completes.
# Needs: target/release/sinkhole (cargo build --release), minisign, curl,
# dig (installed with apt-get when missing and root).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/benches/lib.sh"
bin=${SINKHOLE:-$root/target/release/sinkhole}
[ -x "$bin" ] || { echo "push.sh: build first: cargo build --release" >&2; exit 2; }
missing=()
command -v minisign >/dev/null || missing+=(minisign)
command -v dig >/dev/null || missing+=(bind9-dnsutils)
command -v curl >/dev/null || missing+=(curl)
bench_install push.sh "${missing[@]}"
bench_workdir push
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || read -r -a sizes <<<"${PUSH_N:-3500 1000000}"

minisign -G -W -p "$work/k.pub" -s "$work/k.key" >/dev/null
token=bench-token-$RANDOM$RANDOM
token_sha=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
fail=0

# cpu_ticks PID: user + system CPU time of a process, in clock ticks (the
# push's CPU cost, which the machine's load does not inflate).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# names PREFIX FROM TO: one name per line.
names() { awk -v p="$1" -v a="$2" -v b="$3" 'BEGIN { for (i = a; i <= b; i++) printf "%s%d.bench-push.example\n", p, i }'; }

for n in "${sizes[@]}"; do
  d="$work/n$n"
  mkdir -p "$d/lists" "$d/state" "$d/audit"
  echo "fileblocked.example" >"$d/lists/block.txt"
  cat >"$d/sinkhole.toml" <<TOML
[server]
listen = ["127.0.0.1:0"]
[upstream]
servers = ["127.0.0.1:9"]
[lists]
paths = ["$d/lists"]
state_dir = "$d/state"
[[lists.managed]]
name = "afm"
signers = ["$work/k.pub"]
[api]
listen = "127.0.0.1:0"
max_body_mb = 1024
[[api.token]]
name = "bench"
sha256 = "$token_sha"
lists = ["afm"]
[audit]
path = "$d/audit"
TOML
  "$bin" serve --config "$d/sinkhole.toml" --ready-file "$d/ready" >"$d/log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do [ -s "$d/ready" ] && break; sleep 0.1; done
  [ -s "$d/ready" ] || { echo "server did not start:"; cat "$d/log"; exit 1; }
  api=$(awk '$1 == "api" {print $2; exit}' "$d/ready")
  dns=$(awk '$1 == "dns" {print $2; exit}' "$d/ready")
  dns_host=${dns%:*}
  dns_port=${dns##*:}
  pct=$(( n / 100 ))
  # v1: a0..a(n-1); v2: the first 1% replaced by b-names; v3: all c-names.
  names a 0 $((n - 1)) >"$d/v1.txt"
  { names b 0 $((pct - 1)); names a "$pct" $((n - 1)); } >"$d/v2.txt"
  names c 0 $((n - 1)) >"$d/v3.txt"
  probe=(a0 b0 c0)
  version=0
  for v in v1 v2 v3; do
    version=$((version + 1))
    f="$d/$v.txt"
    minisign -S -s "$work/k.key" -m "$f" -t "list=afm version=$version" >/dev/null
    cpu0=$(cpu_ticks "$pid")
    start=$(date +%s%N)
    body=$(curl -sS -T "$f" "http://$api/v1/lists/afm" \
      -H "Authorization: Bearer $token" \
      -H "Sinkhole-Signature: $(base64 -w0 "$f.minisig")" -w '\n%{http_code}')
    end=$(date +%s%N)
    cpu=$(( ($(cpu_ticks "$pid") - cpu0) * 1000 / $(getconf CLK_TCK) ))
    status=${body##*$'\n'}
    receipt=${body%$'\n'*}
    if [ "$status" != 200 ]; then
      echo "N=$n $v: HTTP $status $receipt"
      fail=1
      continue
    fi
    took=$(printf '%s' "$receipt" | sed -n 's/.*"took_ms":\([0-9]*\).*/\1/p')
    added=$(printf '%s' "$receipt" | sed -n 's/.*"added":\([0-9]*\).*/\1/p')
    removed=$(printf '%s' "$receipt" | sed -n 's/.*"removed":\([0-9]*\).*/\1/p')
    probe_name="${probe[$((version - 1))]}.bench-push.example"
    rc=$(dig +tries=1 +time=2 -p "$dns_port" @"$dns_host" "$probe_name" A | awk '/status:/ {gsub(",", "", $6); print $6}')
    wall=$(( (end - start) / 1000000 ))
    size=$(stat -c %s "$f")
    printf 'N=%-8s %s  %6.1f MB  receipt took_ms %6s  curl wall %6s ms  server CPU %6s ms  added %8s removed %8s  %s %s\n' \
      "$n" "$v" "$(mb $((size / 1024)))" "$took" "$wall" "$cpu" "$added" "$removed" "$probe_name" "$rc"
    [ "$rc" = NXDOMAIN ] || fail=1
    if [ "$n" -ge 1000000 ] && [ "$v" = v2 ] && [ "$took" -gt 1000 ]; then
      echo "  target missed: 1% push at $n names took $took ms > 1000 ms"
      fail=1
    fi
  done
  echo "N=$n server peak RSS $(mb "$(hwm_kb "$pid")") MB"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
exit "$fail"
