# Helpers the load benchmarks share (attack.sh, overload.sh, soak.sh):
# `. "$root/benches/lib.sh"` after `set -euo pipefail`.

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# bench_install NAME PACKAGE...: install the missing Debian packages the
# caller names (as root, with apt-get); otherwise say which and exit 2.
bench_install() {
  local name=$1
  shift
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "$name: installing $*" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" </dev/null >/dev/null
  else
    echo "$name: missing $* (apt-get install -y $*)" >&2
    exit 2
  fi
}

# bench_workdir NAME: a scratch directory in $work and a $pids array; on
# exit every pid in it is stopped and the directory removed (KEEP=1 keeps
# it).
bench_workdir() {
  work=$(mktemp -d "/tmp/sinkhole-$1.XXXXXX")
  pids=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
