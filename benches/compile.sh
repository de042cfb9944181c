#!/usr/bin/env bash
# Cold-start benchmark (issue 16): `sinkhole compile` of peerbench-style
# plain lists at several sizes, with wall time, peak RSS and snapshot bytes
# per name; optionally against a baseline binary in the same run, and
# callgrind instruction counts (repeatable on a loaded machine).
#
#   cargo build --release
#   benches/compile.sh [N...]            # default: 10000 100000 1000000
#
# Environment:
#   COMPILE_DATA   directory with blocklist-N.txt (default: a temporary
#                  directory filled by ../shared/peerbench/gen_data.py, which
#                  is deterministic, so the lists are peerbench's own)
#   BASE_BIN       a baseline sinkhole binary (e.g. main's, built in a
#                  separate worktree): runs alternate base, new, base, new…
#   ROUNDS         runs per binary and size (default 3); medians are printed
#   CALLGRIND=1    also count instructions (valgrind --tool=callgrind) once
#                  per binary and size (slow: ~50× the wall time)
#   SINKHOLE_BIN   the binary under test (default: target/release/sinkhole)
#
# Prints one line per binary and size:
#   bin=new N=1000000 compile_s=0.61 peak_rss_mb=52.1 bytes_per_name=15.4 [ir=…]
# and the load average, since other builds share the machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${SINKHOLE_BIN:-$here/../target/release/sinkhole}
rounds=${ROUNDS:-3}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10000 100000 1000000)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data=${COMPILE_DATA:-$work/data}
mkdir -p "$data"
missing=()
for n in "${sizes[@]}"; do
  [ -f "$data/blocklist-$n.txt" ] || missing+=("$n")
done
if [ ${#missing[@]} -gt 0 ]; then
  gen=$here/../../shared/peerbench/gen_data.py
  [ -f "$gen" ] || { echo "no $data/blocklist-N.txt and no $gen" >&2; exit 2; }
  python3 "$gen" --out "$data" --queries 1000 \
    --sizes "$(IFS=,; echo "${missing[*]}")" >/dev/null 2>&1
fi

bins=(new)
[ -n "${BASE_BIN:-}" ] && bins=(base new)
path_of() { if [ "$1" = base ]; then echo "$BASE_BIN"; else echo "$bin"; fi; }

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in "${sizes[@]}"; do
  list=$data/blocklist-$n.txt
  names=$(grep -c . "$list")
  for r in $(seq "$rounds"); do
    for b in "${bins[@]}"; do
      out=$work/$b-$n.snap
      /usr/bin/time -f "%e %M" -o "$work/time" "$(path_of "$b")" compile \
        --list "$list" -o "$out" >/dev/null
      read -r secs kb < "$work/time"
      echo "$secs" >> "$work/$b-$n.secs"
      echo "$kb" >> "$work/$b-$n.kb"
      stat -c %s "$out" > "$work/$b-$n.bytes"
    done
  done
  for b in "${bins[@]}"; do
    secs=$(median < "$work/$b-$n.secs")
    mb=$(median < "$work/$b-$n.kb" | awk '{printf "%.1f", $1 / 1024}')
    bpn=$(awk -v b="$(cat "$work/$b-$n.bytes")" -v n="$names" 'BEGIN {printf "%.1f", b / n}')
    ir=
    if [ "${CALLGRIND:-0}" = 1 ]; then
      valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
        "$(path_of "$b")" compile --list "$list" -o "$work/cg.snap" \
        >/dev/null 2>"$work/cg.err"
      ir=" ir=$(grep -m1 '^summary:' "$work/cg.out" | awk '{print $2}')"
    fi
    echo "bin=$b N=$n compile_s=$secs peak_rss_mb=$mb bytes_per_name=$bpn$ir"
  done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
