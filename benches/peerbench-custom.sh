#!/usr/bin/env bash
# sinkhole in peerbench's `custom` slot (../shared/peerbench/peers/custom.sh):
# writes a config for the run and execs `sinkhole serve` in the foreground.
#
#   (<repo>: the absolute path of this checkout)
#   cd ../shared/peerbench
#   PEERBENCH_CUSTOM_NAME=sinkhole \
#   PEERBENCH_CUSTOM_CMD='<repo>/benches/peerbench-custom.sh {port} {upstream} {blocklist} {dir}' \
#   ./run.sh custom 3500        # and: ./run.sh custom 1000000
#
# The plain list blocks each name and its subdomains with NXDOMAIN, as the
# harness expects. workers = 0 gives one worker per core the process may
# use; peerbench pins it to one core, so one worker, like the other peers.
# Hits go to an audit directory in the run folder (the other peers log nothing; a hit
# log on the console would measure the terminal).
# SINKHOLE_BIN overrides the binary (default: target/release/sinkhole).
set -euo pipefail
if [ $# -ne 4 ]; then
  echo "usage: $0 PORT UPSTREAM(ip:port) BLOCKLIST DIR" >&2
  exit 2
fi
port=$1 upstream=$2 list=$3 dir=$4
here=$(cd "$(dirname "$0")" && pwd)
bin=${SINKHOLE_BIN:-$here/../target/release/sinkhole}
case $list in /*) ;; *) list=$PWD/$list ;; esac
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
mkdir -p "$dir"
cat > "$dir/sinkhole.toml" <<EOF
[server]
listen = ["127.0.0.1:$port"]
workers = 0

[upstream]
servers = ["$upstream"]
timeout_ms = 1500

[lists]
paths = ["$list"]

[policy]
action = "nxdomain"

[audit]
path = "$dir/audit"
EOF
exec "$bin" serve --config "$dir/sinkhole.toml"
