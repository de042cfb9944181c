#!/usr/bin/env bash
# Answer conformance of sinkhole against Unbound (RPZ), 10,000 generated
# questions: see benches/conformance.py for what is compared and which
# differences are documented.
#
#   make conformance                 # builds the release binary, then runs this
#   benches/conformance.sh [--queries N] [--seed S] [--keep] [--show N]
#
# Installs what is missing, only then, and only as root: Debian's unbound
# (apt-get install -y unbound; in a container policy-rc.d keeps the service
# from starting, on a systemd host `systemctl disable --now unbound` after)
# and dnspython (pip). Everything listens on 127.0.0.1 ports picked free at
# start; the Python script stops what it started (also on Ctrl-C / TERM).
# Bounded by CONFORMANCE_TIMEOUT seconds (default 900).
# Exit 0: no unexpected difference; 1: unexpected differences; 2: setup error.
# SINKHOLE_BIN overrides the binary (default target/release/sinkhole).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SINKHOLE_BIN:-$root/target/release/sinkhole}
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 2; }

as_root_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "conformance: $* missing and not root (apt-get install -y $*)" >&2; exit 2
  fi
  echo "conformance: installing $*" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" </dev/null >/dev/null
}
[ -x /usr/sbin/unbound ] && [ -x /usr/sbin/unbound-control ] || as_root_install unbound
if ! python3 -c 'import dns.message' 2>/dev/null; then
  echo "conformance: installing dnspython (pip)" >&2
  python3 -m pip install --quiet dnspython >&2 || { echo "conformance: pip install dnspython failed" >&2; exit 2; }
fi
export SINKHOLE_BIN=$bin
exec timeout --signal=TERM --kill-after=10 "${CONFORMANCE_TIMEOUT:-900}" \
  python3 "$root/benches/conformance.py" run --unbound /usr/sbin/unbound "$@"
