#!/usr/bin/env bash
# TLS front benchmark (issue 12): benches/tls-front.sh after cargo build --release.
#
# Starts sinkhole with `[web] tls_listen` on 127.0.0.1, a TLS origin on
# 127.0.0.2 (Python asyncio + ssl, a self-signed certificate made here
# with openssl) and a stub upstream resolver naming bench.loop2.example
# 127.0.0.2 (steered: the list has an http:// URL rule for it). Reports:
#   throughput: TLS_MB MB read over TLS_RUNS connections through the front
#     and directly from the origin (same client, same run; the client
#     verifies the origin's certificate both ways), the ratio, and
#     sinkhole's CPU seconds per GB passed through
#   memory: RSS growth of sinkhole with TLS_IDLE idle passed-through
#     connections open (handshake done, nothing moving), per connection;
#     the target is <= 64 KB
# Loopback only; everything started here is stopped on exit.
# Environment (defaults): TLS_MB=256 TLS_RUNS=3 TLS_IDLE=1000 KEEP=0
#   SINKHOLE_BIN (default target/release/sinkhole)
set -euo pipefail
MB=${TLS_MB:-256} RUNS=${TLS_RUNS:-3} IDLE=${TLS_IDLE:-1000}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SINKHOLE_BIN:-$root/target/release/sinkhole}
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 2; }
. "$root/benches/lib.sh"
missing=()
command -v openssl >/dev/null || missing+=(openssl)
bench_install tls-front ${missing[@]+"${missing[@]}"}
bench_workdir tls-front
# Idle connections need file descriptors on both ends.
ulimit -n $((IDLE * 4 + 256)) 2>/dev/null || ulimit -n 4096
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz}' "/proc/$1/stat"; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench.loop2.example -addext subjectAltName=DNS:bench.loop2.example \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

# The origin, the stub resolver and the clients, in one Python file.
cat >"$work/bench.py" <<'PY'
import asyncio, socket, ssl, struct, sys, time

def origin(cert, key, mb):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    chunk = b"x" * 65536
    async def serve(reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /big"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (mb << 20))
                for _ in range(mb * 16):
                    writer.write(chunk)
                    await writer.drain()
            else:  # /idle: answer, then keep the connection open and silent
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                await reader.read()
        except Exception:
            pass
        finally:
            writer.close()
    async def main():
        srv = await asyncio.start_server(serve, "127.0.0.2", 0, ssl=ctx, backlog=4096)
        print(srv.sockets[0].getsockname()[1], flush=True)
        await srv.serve_forever()
    asyncio.run(main())

def resolver():
    # Answers every A query with 127.0.0.2, everything else with no data.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1], flush=True)
    while True:
        q, peer = s.recvfrom(512)
        if len(q) < 17:
            continue
        end = 12
        while end < len(q) and q[end]:
            end += 1 + q[end]
        question = q[12:end + 5]
        qtype = struct.unpack(">H", q[end + 1:end + 3])[0]
        an = 1 if qtype == 1 else 0
        head = q[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, an, 0, 0)
        answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f\x00\x00\x02" if an else b""
        s.sendto(head + question + answer, peer)

def client_ctx(cert):
    ctx = ssl.create_default_context(cafile=cert)
    return ctx

def throughput(cert, host, port, runs, mb):
    ctx = client_ctx(cert)
    best = None
    total = 0.0
    for _ in range(runs):
        t0 = time.perf_counter()
        with socket.create_connection((host, port)) as raw:
            with ctx.wrap_socket(raw, server_hostname="bench.loop2.example") as s:
                s.sendall(b"GET /big HTTP/1.1\r\nHost: bench.loop2.example\r\n\r\n")
                got = 0
                while True:
                    b = s.recv(1 << 20)
                    if not b:
                        break
                    got += len(b)
        dt = time.perf_counter() - t0
        if got < (mb << 20):
            sys.exit(f"short read: {got} bytes")
        total += dt
        rate = (mb / dt)
        best = rate if best is None else max(best, rate)
    print(f"{mb * runs / total:.1f} {best:.1f}")

def idle(cert, host, port, n, ready_file):
    ctx = client_ctx(cert)
    socks = []
    for i in range(n):
        raw = socket.create_connection((host, port))
        s = ctx.wrap_socket(raw, server_hostname="bench.loop2.example")
        s.sendall(b"GET /idle HTTP/1.1\r\nHost: bench.loop2.example\r\n\r\n")
        s.recv(1024)
        socks.append(s)
    open(ready_file, "w").write(str(len(socks)))
    time.sleep(3600)

mode = sys.argv[1]
if mode == "origin":
    origin(sys.argv[2], sys.argv[3], int(sys.argv[4]))
elif mode == "resolver":
    resolver()
elif mode == "throughput":
    throughput(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
elif mode == "idle":
    idle(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
PY

python3 "$work/bench.py" origin "$work/cert.pem" "$work/key.pem" "$MB" >"$work/origin.port" &
pids+=($!)
python3 "$work/bench.py" resolver >"$work/resolver.port" &
pids+=($!)
for f in origin resolver; do
  for _ in $(seq 50); do [ -s "$work/$f.port" ] && break; sleep 0.1; done
done
oport=$(cat "$work/origin.port") rport=$(cat "$work/resolver.port")

mkdir -p "$work/lists"
printf 'http://bench.loop2.example/blocked-page\n' >"$work/lists/urls.txt"
cat >"$work/sinkhole.toml" <<EOF
[server]
listen = ["127.0.0.1:0"]
[upstream]
servers = ["127.0.0.1:$rport"]
[lists]
paths = ["$work/lists"]
[policy]
address_v4 = "127.0.0.1"
[audit]
path = "$work/audit"
[web]
listen = "127.0.0.1:0"
tls_listen = "127.0.0.1:0"
origin_https_port = $oport
allow_private_origins = true
max_connections = $((IDLE + 100))
EOF
"$bin" serve --config "$work/sinkhole.toml" --ready-file "$work/ready" >"$work/sinkhole.log" 2>&1 &
spid=$!
pids+=($spid)
for _ in $(seq 300); do [ -s "$work/ready" ] && break; sleep 0.1; done
[ -s "$work/ready" ] || { cat "$work/sinkhole.log" >&2; exit 1; }
front=$(awk '$1 == "web-tls" {print $2; exit}' "$work/ready")
[ -n "$front" ] || { echo "no web-tls listener in the ready file" >&2; cat "$work/ready" >&2; exit 1; }
fport=${front##*:}
log "front 127.0.0.1:$fport, origin 127.0.0.2:$oport, $MB MB x $RUNS"

read -r direct_avg direct_best < <(python3 "$work/bench.py" throughput "$work/cert.pem" 127.0.0.2 "$oport" "$RUNS" "$MB")
cpu0=$(cpu_s "$spid")
read -r front_avg front_best < <(python3 "$work/bench.py" throughput "$work/cert.pem" 127.0.0.1 "$fport" "$RUNS" "$MB")
cpu1=$(cpu_s "$spid")
cpu_per_gb=$(awk -v a="$cpu0" -v b="$cpu1" -v mb="$MB" -v r="$RUNS" 'BEGIN {printf "%.2f", (b - a) / (mb * r / 1024)}')
ratio=$(awk -v f="$front_avg" -v d="$direct_avg" 'BEGIN {printf "%.2f", f / d}')

rss0=$(rss_kb "$spid")
python3 "$work/bench.py" idle "$work/cert.pem" 127.0.0.1 "$fport" "$IDLE" "$work/idle.ready" &
pids+=($!)
for _ in $(seq 600); do [ -s "$work/idle.ready" ] && break; sleep 0.1; done
[ -s "$work/idle.ready" ] || { echo "idle connections did not open" >&2; exit 1; }
sleep 1
rss1=$(rss_kb "$spid")
per_conn=$(awk -v a="$rss0" -v b="$rss1" -v n="$IDLE" 'BEGIN {printf "%.1f", (b - a) / n}')

echo "== TLS front benchmark ($(date -u +%Y-%m-%d), load before: $(cut -d' ' -f1-3 /proc/loadavg))"
echo "throughput MB/s (mean of $RUNS, best): direct $direct_avg ($direct_best), through the front $front_avg ($front_best), ratio $ratio"
echo "sinkhole CPU per GB passed through: ${cpu_per_gb} s"
echo "RSS with $IDLE idle passed-through connections: $(mb "$rss0") MB -> $(mb "$rss1") MB, ${per_conn} KB per connection (target <= 64)"
awk -v p="$per_conn" 'BEGIN {exit !(p <= 64)}' || { echo "over 64 KB per idle connection" >&2; exit 1; }
