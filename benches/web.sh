#!/usr/bin/env bash
# The web front's cost (issue 12): added latency and throughput of a
# proxied request against going to the origin directly (same client, same
# run), CPU per proxied request, and memory per open connection.
#
#   make release && benches/web.sh            # or: make bench-web
#   REQUESTS=2000 SECONDS_EACH=5 CONNS=1000 benches/web.sh
#
# Everything is on loopback: a stub DNS upstream (A 127.0.0.2 for every
# name), an HTTP/1.1 keep-alive origin on 127.0.0.2 answering "ok", and the
# release binary with [web] on. The client is Python (http.client with
# keep-alive), the same for both paths, so its own cost cancels out of the
# difference; it is not a load generator, and the throughput figures are
# the client's ceiling as much as the server's. Compare the ratio, not the
# absolute numbers, and run on an idle machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/benches/lib.sh"
bin=${BIN:-$root/target/release/sinkhole}
[ -x "$bin" ] || { echo "web.sh: build first (make release)" >&2; exit 2; }
command -v python3 >/dev/null || bench_install web.sh python3
bench_workdir web

REQUESTS=${REQUESTS:-2000}
SECONDS_EACH=${SECONDS_EACH:-5}
CONNS=${CONNS:-1000}
# The idle-connection test needs that many file descriptors.
ulimit -n $((CONNS * 2 + 256)) 2>/dev/null || true

cat >"$work/stubs.py" <<'EOF'
# A DNS upstream (A 127.0.0.2 for every name) and an HTTP origin.
import asyncio, socket, struct, sys

class Dns(asyncio.DatagramProtocol):
    def connection_made(self, t): self.t = t
    def datagram_received(self, q, addr):
        if len(q) < 12: return
        i = 12
        while i < len(q) and q[i]: i += q[i] + 1
        qtype = struct.unpack("!H", q[i+1:i+3])[0] if i + 3 <= len(q) else 0
        question = q[12:i+5]
        head = q[:2] + b"\x81\x80" + b"\x00\x01" + (b"\x00\x01" if qtype == 1 else b"\x00\x00") + b"\x00\x00\x00\x00"
        ans = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04" + socket.inet_aton("127.0.0.2") if qtype == 1 else b""
        self.t.sendto(head + question + ans, addr)

BODY = b"ok\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n" + BODY

class Http(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, b""
    def data_received(self, d):
        self.buf += d
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.t.write(RESP)

async def main():
    loop = asyncio.get_running_loop()
    dns, _ = await loop.create_datagram_endpoint(Dns, local_addr=("127.0.0.1", 0))
    srv = await loop.create_server(Http, "127.0.0.2", 0, backlog=4096)
    print(dns.get_extra_info("sockname")[1], srv.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
EOF

cat >"$work/client.py" <<'EOF'
import http.client, os, socket, statistics, sys, threading, time

mode = sys.argv[1]
direct = ("127.0.0.2", int(os.environ["ORIGIN_PORT"]))
front = ("127.0.0.1", int(os.environ["FRONT_PORT"]))
host = "bench.example"

def latencies(addr, n):
    c = http.client.HTTPConnection(*addr)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        c.request("GET", "/page", headers={"Host": host})
        r = c.getresponse(); r.read()
        out.append(time.perf_counter() - t)
    c.close()
    return out

def throughput(addr, seconds, threads=8):
    count = [0] * threads
    stop = time.monotonic() + seconds
    def run(i):
        c = http.client.HTTPConnection(*addr)
        while time.monotonic() < stop:
            c.request("GET", "/page", headers={"Host": host})
            r = c.getresponse(); r.read()
            count[i] += 1
    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    [t.start() for t in ts]; [t.join() for t in ts]
    return sum(count)

if mode == "latency":
    n = int(os.environ["REQUESTS"])
    latencies(front, 200); latencies(direct, 200)  # warm up
    for run in range(3):
        d = statistics.median(latencies(direct, n)) * 1e6
        p = statistics.median(latencies(front, n)) * 1e6
        print(f"latency run {run+1}: direct {d:.0f} us, proxied {p:.0f} us, added {p-d:.0f} us")
elif mode == "throughput":
    s = float(os.environ["SECONDS_EACH"])
    which = sys.argv[2]
    n = throughput(direct if which == "direct" else front, s)
    print(n)
elif mode == "idle":
    # Open CONNS connections to the front; with "request" each makes one
    # request first and stays open in keep-alive, else none is sent.
    n = int(os.environ["CONNS"])
    socks = []
    for _ in range(n):
        s = socket.create_connection(front)
        if sys.argv[2] == "request":
            s.sendall(b"GET /page HTTP/1.1\r\nHost: bench.example\r\n\r\n")
            buf = b""
            while b"ok\n" not in buf:
                buf += s.recv(4096)
        socks.append(s)
    print("open", flush=True)
    sys.stdin.readline()
EOF

python3 "$work/stubs.py" >"$work/ports" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/ports" ] && break; sleep 0.1; done
read -r dns_port origin_port <"$work/ports"
mkdir -p "$work/lists"
printf 'http://bench.example/blocked\n' >"$work/lists/urls.txt"
cat >"$work/sinkhole.toml" <<EOF
[server]
listen = ["127.0.0.1:0"]
[upstream]
servers = ["127.0.0.1:$dns_port"]
[lists]
paths = ["$work/lists"]
watch = false
[policy]
address_v4 = "127.0.0.1"
[audit]
path = "$work/audit"
[web]
listen = "127.0.0.1:0"
allow_private_origins = true
origin_http_port = $origin_port
max_connections = $((CONNS + 100))
header_timeout_ms = 120000
keepalive_timeout_ms = 120000
EOF
"$bin" serve --config "$work/sinkhole.toml" --ready-file "$work/ready" >"$work/server.log" 2>&1 &
server=$!
pids+=($server)
for _ in $(seq 100); do [ -s "$work/ready" ] && break; sleep 0.1; done
front_port=$(awk '$1 == "web" {split($2, a, ":"); print a[2]}' "$work/ready")
export ORIGIN_PORT=$origin_port FRONT_PORT=$front_port REQUESTS SECONDS_EACH CONNS
log "origin 127.0.0.2:$origin_port, front 127.0.0.1:$front_port (pid $server)"

python3 "$work/client.py" latency

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
direct=$(python3 "$work/client.py" throughput direct)
t0=$(cpu_ticks "$server")
proxied=$(python3 "$work/client.py" throughput proxied)
t1=$(cpu_ticks "$server")
hz=$(getconf CLK_TCK)
awk -v d="$direct" -v p="$proxied" -v s="$SECONDS_EACH" -v t=$((t1 - t0)) -v hz="$hz" 'BEGIN {
  printf "throughput (8 keep-alive clients, %s s each): direct %.0f req/s, proxied %.0f req/s, ratio %.2f\n", s, d / s, p / s, p / d
  printf "server CPU per proxied request: %.0f us\n", t / hz / p * 1e6
}'

for kind in none request; do
  before=$(rss_kb "$server")
  coproc IDLE { python3 "$work/client.py" idle "$kind"; }
  read -r _ <&"${IDLE[0]}"
  sleep 1
  after=$(rss_kb "$server")
  echo >&"${IDLE[1]}"
  wait "$IDLE_PID" 2>/dev/null || true
  awk -v a="$after" -v b="$before" -v n="$CONNS" -v k="$kind" 'BEGIN {
    what = (k == "request") ? "after one request (keep-alive)" : "before a request"
    printf "memory per open connection, %s: %.1f KB (%d connections, RSS %.1f -> %.1f MB)\n", what, (a - b) / n, n, b / 1024, a / 1024
  }'
  sleep 1
done
