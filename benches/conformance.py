#!/usr/bin/env python3
"""Answer conformance of sinkhole against Unbound (RPZ) — `make conformance`.

One upstream (a small recursive-looking responder in this file, serving
A/AAAA/MX/TXT/HTTPS/CAA, CNAME chains, NXDOMAIN and NODATA names), Unbound
with the blocklist as an RPZ zone (`name` and `*.name` per entry,
`rpz-action-override: nxdomain`, forwarding everything to the upstream,
no DNSSEC, no prefetch) and sinkhole with the same list as a plain file
(action nxdomain) forwarding to the same upstream. A deterministic set of
queries (default 10,000: blocked, subdomains of blocked, allowed, decoys
such as x<blocked>, CNAME chains into blocked names, NXDOMAIN/NODATA names,
mixed case, several qtypes) goes to both; per query the rcode and the answer
section, as a set of (name, type, rdata) with TTLs ignored, must be equal.

Documented differences (not failures; EXPLAIN below and the README):
  * EDE options and the authority section (SOA in negative answers) are
    not compared at all;
  * cname-chain: a forwarded answer whose CNAME chain passes through a
    blocked name. sinkhole replaces the whole answer with its block answer
    (NXDOMAIN, empty answer section); Unbound's RPZ (like BIND's) keeps the
    CNAMEs up to the blocked name and puts NXDOMAIN after them. Either way
    no data of the blocked name reaches the client;
  * cname-qtype: QTYPE=CNAME for an alias whose target is blocked: sinkhole
    blocks, Unbound returns the CNAME (it does not chase it for QTYPE=CNAME);
  * unbound-cache: Unbound 1.17 applies RPZ to CNAME targets only while it
    resolves a chain, not when it answers the chain from its cache
    (NLnetLabs/unbound#954), so a repeated question leaks the blocked
    target. Each such answer is re-asked of Unbound with its cache flushed
    (unbound-control flush_zone .) and must then be a cname-chain answer.

Usage (normally through benches/conformance.sh):
  conformance.py run [--queries N] [--seed S] [--keep] [--work DIR]
  conformance.py upstream PORT ZONE.json      (internal: the upstream)
Exit 0: no unexpected difference; 1: unexpected differences; 2: setup error.
"""
import argparse
import hashlib
import json
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ["alpha", "bit", "coin", "dex", "fast", "gold", "hash", "moon", "node",
         "pay", "quant", "rich", "safe", "token", "trade", "vault", "yield", "zen"]
TLDS = ["kz", "io", "xyz", "com", "net", "org", "app", "cc", "test"]
QTYPE_MIX = [("A", 40), ("AAAA", 20), ("MX", 8), ("TXT", 10), ("HTTPS", 15),
             ("CAA", 4), ("SRV", 3)]
TTL = 3600


# --------------------------------------------------------------------- data
def gen_data(n_queries, seed):
    """Blocklist, upstream zone description and the query list (name, type, category)."""
    rnd = random.Random(seed)

    def w(i):
        return WORDS[i % 18] + WORDS[(i // 18) % 18]

    blocked = [f"{w(i)}{i}-exchange.{TLDS[i % 9]}" for i in range(1500)]
    # Deep rules: a listed child of an unlisted (allowed) parent.
    deep_parents = [f"{w(i)}{i}-bank.{TLDS[i % 9]}" for i in range(200)]
    deep = [f"{rnd.choice(['login', 'pay', 'secure', 'wallet'])}.{p}" for p in deep_parents]
    blocklist = blocked + deep
    allowed = [f"{w(i)}{i}-shop.{TLDS[(i + 3) % 9]}" for i in range(4000)]
    nx = [f"nx{i}-{WORDS[i % 18]}.{TLDS[i % 9]}" for i in range(400)]
    nodata = [f"empty{i}-{WORDS[i % 18]}.{TLDS[i % 9]}" for i in range(150)]

    cname = {}          # owner -> target (the upstream follows chains itself)
    chains = defaultdict(list)   # category -> owners

    def chain(cat, final, hops, blocked_at=None):
        idx = len(cname)
        names = [f"c{idx}-{rnd.choice(WORDS)}.cdn-{rnd.choice(WORDS)}.net"]
        for k in range(1, hops):
            names.append(f"h{idx}-{k}.edge-{rnd.choice(WORDS)}.net")
        if blocked_at is not None:
            # A blocked name in the middle of the chain (it is itself a CNAME).
            names[blocked_at] = f"cn{idx}.{rnd.choice(blocked)}"
        for a, b in zip(names, names[1:]):
            cname[a] = b
        cname[names[-1]] = final
        chains[cat].append(names[0])

    for _ in range(350):
        chain("cname_allowed", rnd.choice(allowed), rnd.randint(1, 3))
    for _ in range(150):
        chain("cname_allowed", "www." + rnd.choice(allowed), rnd.randint(1, 3))
    for _ in range(300):       # chain ends at a blocked name
        chain("cname_into_blocked", rnd.choice(blocked), rnd.randint(1, 3))
    for _ in range(250):       # ... at a subdomain of a blocked name
        chain("cname_into_blocked", rnd.choice(["www.", "cdn.", "a.b."]) + rnd.choice(blocked),
              rnd.randint(1, 3))
    for _ in range(100):       # ... at a deep rule
        chain("cname_into_blocked", rnd.choice(deep), rnd.randint(1, 2))
    for _ in range(150):       # a blocked name in the middle of the chain
        chain("cname_into_blocked", rnd.choice(allowed), 3, blocked_at=1)
    for _ in range(200):
        chain("cname_to_nx", rnd.choice(nx), rnd.randint(1, 3))
    for _ in range(80):        # chains to decoys (x<blocked>): must not be blocked
        chain("cname_to_decoy", "x" + rnd.choice(blocked), rnd.randint(1, 2))

    def qtype():
        return rnd.choices([t for t, _ in QTYPE_MIX], weights=[x for _, x in QTYPE_MIX])[0]

    def sub(name):
        return ".".join(rnd.choice(["www", "api", "m", "cdn", "mail", "x1", "deep"])
                        for _ in range(rnd.randint(1, 3))) + "." + name

    def decoy():
        b = rnd.choice(blocked)
        first, rest = b.split(".", 1)
        return rnd.choice([
            "x" + b,                                   # label boundary
            f"{first}.{TLDS[(TLDS.index(rest) + 1) % 9]}" if rest in TLDS else "x" + b,
            f"{b}.example",                            # listed name as a prefix
            f"{first}x.{rest}",
            f"{first[1:]}.{rest}",                     # a suffix of the label
        ])

    def mixed(name):
        return "".join(c.upper() if rnd.random() < 0.5 else c for c in name)

    plan = [
        ("blocked_exact", 1300, lambda: (rnd.choice(blocked), qtype())),
        ("blocked_sub", 1300, lambda: (sub(rnd.choice(blocked)), qtype())),
        ("deep_rule", 300, lambda: (rnd.choice([lambda: rnd.choice(deep),
                                                lambda: sub(rnd.choice(deep))])(), qtype())),
        ("deep_parent", 200, lambda: (rnd.choice([lambda: rnd.choice(deep_parents),
                                                  lambda: "www." + rnd.choice(deep_parents)])(),
                                      qtype())),
        ("allowed", 2150, lambda: (rnd.choice(allowed), qtype())),
        ("allowed_sub", 450, lambda: (sub(rnd.choice(allowed)), qtype())),
        ("nxdomain", 500, lambda: (rnd.choice([lambda: rnd.choice(nx),
                                               lambda: sub(rnd.choice(nx))])(), qtype())),
        ("nodata", 200, lambda: (rnd.choice(nodata), qtype())),
        ("decoy", 900, lambda: (decoy(), qtype())),
        ("cname_allowed", 600, lambda: (rnd.choice(chains["cname_allowed"]), qtype())),
        ("cname_into_blocked", 900, lambda: (rnd.choice(chains["cname_into_blocked"]), qtype())),
        ("cname_to_nx", 250, lambda: (rnd.choice(chains["cname_to_nx"]), qtype())),
        ("cname_to_decoy", 100, lambda: (rnd.choice(chains["cname_to_decoy"]), qtype())),
        ("cname_qtype", 200, lambda: (rnd.choice(chains[rnd.choice(["cname_allowed",
                                                                    "cname_into_blocked"])]),
                                      "CNAME")),
        ("mixed_case", 300, lambda: (mixed(rnd.choice([rnd.choice(blocked), sub(rnd.choice(blocked)),
                                                        rnd.choice(allowed)])), qtype())),
        ("ns_soa", 50, lambda: (rnd.choice(allowed), rnd.choice(["NS", "SOA"]))),
    ]
    total = sum(n for _, n, _ in plan)
    scale = n_queries / total
    queries = []
    for cat, n, f in plan:
        for _ in range(round(n * scale)):
            name, t = f()
            queries.append((name, t, cat))
    while len(queries) < n_queries:      # rounding: top up with allowed names
        queries.append((rnd.choice(allowed), qtype(), "allowed"))
    del queries[n_queries:]
    rnd.shuffle(queries)
    zone = {"cname": cname, "nxdomain": nx, "nodata": nodata}
    return blocklist, zone, queries


# ----------------------------------------------------------------- upstream
def soa_for(name):
    labels = name.rstrip(".").split(".")
    apex = ".".join(labels[-2:]) + "."
    return dns.rrset.from_text(apex, 300, "IN", "SOA",
                               f"ns1.{apex} hostmaster.{apex} 1 3600 600 86400 300")


def synth(name, qtype):
    """Records the upstream serves for an ordinary name (deterministic)."""
    h = hashlib.sha256(name.encode()).digest()
    t = dns.rdatatype.to_text(qtype)
    if t == "A":
        rd = [f"10.{h[0]}.{h[1]}.{h[2]}"] + ([f"10.{h[3]}.{h[4]}.{h[5]}"] if h[6] & 1 else [])
    elif t == "AAAA":
        rd = [f"2001:db8:{h[0]:x}{h[1]:02x}::{h[2]:x}"]
    elif t == "MX":
        rd = [f"10 mx1.{name}"] + ([f"20 mx2.{name}"] if h[7] & 1 else [])
    elif t == "TXT":
        rd = ['"v=spf1 -all"', f'"id={h[:4].hex()}"']
    elif t == "HTTPS":
        rd = ['1 . alpn="h2,h3"'] if h[8] & 1 else [f"1 . alpn=h2 ipv4hint=10.{h[0]}.{h[1]}.{h[2]}"]
    elif t == "CAA":
        rd = ['0 issue "letsencrypt.org"']
    elif t == "NS":
        rd = [f"ns1.{name}", f"ns2.{name}"]
    else:
        return None
    return dns.rrset.from_text(name, TTL, "IN", t, *rd)


def upstream_answer(zone, qname, qtype):
    """(rcode, answer rrsets, authority rrsets) as a recursive resolver would give."""
    cname, nx, nodata = zone["cname"], zone["nxdomain"], zone["nodata"]
    name = qname.lower().rstrip(".")
    answer = []
    for _ in range(10):
        if name in cname:
            answer.append(dns.rrset.from_text(name + ".", TTL, "IN", "CNAME", cname[name] + "."))
            if qtype == dns.rdatatype.CNAME:
                return dns.rcode.NOERROR, answer, []
            name = cname[name]
            continue
        labels = name.split(".")
        if any(".".join(labels[i:]) in nx for i in range(len(labels))):
            return dns.rcode.NXDOMAIN, answer, [soa_for(name)]
        if name in nodata:
            return dns.rcode.NOERROR, answer, [soa_for(name)]
        if qtype == dns.rdatatype.SOA:
            labels = name.split(".")
            if len(labels) == 2:
                return dns.rcode.NOERROR, answer + [soa_for(name)], []
            return dns.rcode.NOERROR, answer, [soa_for(name)]
        rr = synth(name + ".", qtype)
        if rr is None:
            return dns.rcode.NOERROR, answer, [soa_for(name)]
        return dns.rcode.NOERROR, answer + [rr], []
    return dns.rcode.SERVFAIL, [], []


def run_upstream(port, zone_file):
    with open(zone_file) as f:
        z = json.load(f)
    zone = {"cname": z["cname"], "nxdomain": set(z["nxdomain"]), "nodata": set(z["nodata"])}
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", port))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("127.0.0.1", port))
    t.listen(64)
    t.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ, "udp")
    sel.register(t, selectors.EVENT_READ, "tcp")

    def respond(wire, limit):
        q = dns.message.from_wire(wire)
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        if q.question:
            qq = q.question[0]
            rcode, an, au = upstream_answer(zone, qq.name.to_text(), qq.rdtype)
            r.set_rcode(rcode)
            r.answer = an
            r.authority = au
        out = r.to_wire()
        if limit and len(out) > limit:
            r.answer, r.authority = [], []
            r.flags |= dns.flags.TC
            out = r.to_wire()
        return out

    while True:
        for key, _ in sel.select():
            if key.data == "udp":
                wire, addr = s.recvfrom(65535)
                try:
                    q = dns.message.from_wire(wire)
                    limit = max(512, q.payload) if q.edns >= 0 else 512
                    s.sendto(respond(wire, limit), addr)
                except Exception:
                    pass
            else:
                try:
                    c, _ = t.accept()
                    c.settimeout(2)
                    with c:
                        while True:
                            hdr = c.recv(2)
                            if len(hdr) < 2:
                                break
                            ln = int.from_bytes(hdr, "big")
                            wire = b""
                            while len(wire) < ln:
                                chunk = c.recv(ln - len(wire))
                                if not chunk:
                                    break
                                wire += chunk
                            out = respond(wire, 0)
                            c.sendall(len(out).to_bytes(2, "big") + out)
                except Exception:
                    pass


# ------------------------------------------------------------------ servers
def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_rpz(blocklist, path):
    with open(path, "w") as f:
        f.write("$TTL 300\n$ORIGIN rpz.conformance.\n")
        f.write("@ SOA localhost. hostmaster.localhost. 1 3600 600 86400 300\n@ NS localhost.\n")
        for d in blocklist:
            f.write(f"{d} CNAME .\n*.{d} CNAME .\n")


def unbound_conf(work, port, uport):
    with open(f"{work}/root.hints", "w") as f:
        f.write(".  3600000 NS a.root.conformance.invalid.\n"
                "a.root.conformance.invalid. 3600000 A 127.0.0.1\n")
    return f"""server:
  interface: 127.0.0.1@{port}
  port: {port}
  do-ip6: no
  num-threads: 1
  username: ""
  chroot: ""
  directory: "{work}"
  pidfile: "{work}/unbound.pid"
  use-syslog: no
  logfile: "{work}/unbound.log"
  verbosity: 1
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  root-hints: "{work}/root.hints"
  module-config: "respip iterator"
  prefetch: no
  prefetch-key: no
  serve-expired: no
  qname-minimisation: no
  minimal-responses: yes
  rrset-roundrobin: no
  aggressive-nsec: no
  # Unbound answers test./invalid./onion. itself by default (RFC 6761); send them upstream too.
  local-zone: "test." nodefault
  local-zone: "invalid." nodefault
  cache-min-ttl: 0
  msg-cache-size: 64m
  rrset-cache-size: 128m
rpz:
  name: rpz.conformance.
  zonefile: "{work}/rpz.zone"
  rpz-action-override: nxdomain
  rpz-log: no
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@{uport}
remote-control:
  control-enable: yes
  control-interface: "{work}/unbound.ctl"
  control-use-cert: no
"""


def sinkhole_conf(work, port, uport):
    return f"""[server]
listen = ["127.0.0.1:{port}"]
workers = 1
control_socket = ""

[upstream]
servers = ["127.0.0.1:{uport}"]
timeout_ms = 3000

[lists]
paths = ["{work}/blocklist.txt"]
watch = false

[policy]
action = "nxdomain"

[audit]
path = "{work}/audit"
"""


def probe(port, name, qtype="A", timeout=0.3):
    q = dns.message.make_query(name, qtype)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(q.to_wire(), ("127.0.0.1", port))
            return dns.message.from_wire(s.recv(65535)).rcode()
        except (socket.timeout, OSError, dns.exception.DNSException):
            return None


def wait_rcode(port, name, rcode, procs, secs=30):
    deadline = time.time() + secs
    while time.time() < deadline:
        if probe(port, name) == rcode:
            return True
        for p in procs:
            if p.poll() is not None:
                return False
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------- client
def canon(msg):
    """(rcode, frozenset of (owner, type, rdata)) with TTLs and case ignored."""
    items = set()
    for rr in msg.answer:
        for rd in rr:
            items.add((rr.name.to_text().lower(), dns.rdatatype.to_text(rr.rdtype),
                       rd.to_text().lower()))
    return dns.rcode.to_text(msg.rcode()), frozenset(items)


RETRIES = Counter()


def query_all(port, queries, window=64, timeout=2.0, tries=3):
    """Send every (name, type) to 127.0.0.1:port, `window` in flight; results by index."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    results = [None] * len(queries)
    pending = {}              # id -> (index, sent_at, tries, wire, qname)
    nxt = 0
    done = 0
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    qid = 0
    while done < len(queries):
        while nxt < len(queries) and len(pending) < window:
            name, t, _ = queries[nxt]
            q = dns.message.make_query(name, t, use_edns=0, payload=1232)
            qid = (qid + 1) & 0xFFFF
            while qid in pending:
                qid = (qid + 1) & 0xFFFF
            q.id = qid
            wire = q.to_wire()
            sock.send(wire)
            pending[qid] = (nxt, time.time(), 1, wire, name.lower().rstrip(".") + ".")
            nxt += 1
        for _ in sel.select(0.05):
            while True:
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    break
                try:
                    m = dns.message.from_wire(data)
                except Exception:
                    continue
                p = pending.get(m.id)
                if p is None or not m.question or m.question[0].name.to_text().lower() != p[4]:
                    continue
                del pending[m.id]
                results[p[0]] = ("TC" if m.flags & dns.flags.TC else None, m)
                done += 1
        now = time.time()
        for i, (idx, at, n, wire, qn) in list(pending.items()):
            if now - at > timeout:
                if n >= tries:
                    del pending[i]
                    results[idx] = ("TIMEOUT", None)
                    done += 1
                else:
                    sock.send(wire)
                    pending[i] = (idx, now, n + 1, wire, qn)
                    RETRIES[port] += 1
    sock.close()
    return results


# --------------------------------------------------------------- comparison
def is_blocked(name, blockset):
    labels = name.lower().rstrip(".").split(".")
    return any(".".join(labels[i:]) in blockset for i in range(len(labels)))


def cname_walk(qname, answer, blockset):
    """Follow the CNAMEs of `answer` from qname: (links used, first blocked name or None)."""
    links = {o: r for o, t, r in answer if t == "CNAME"}
    cur, used = qname.lower().rstrip(".") + ".", 0
    while used <= len(links):
        if is_blocked(cur, blockset):
            return used, cur
        if cur not in links:
            break
        cur = links[cur]
        used += 1
    return used, None


def classify(qname, qtype, s, u, blockset):
    """'same', a documented difference, 'recheck' (ask a cold Unbound) or 'UNEXPECTED'."""
    if s == u:
        return "same"
    (srcode, sans), (urcode, uans) = s, u
    blocked_answer = srcode == "NXDOMAIN" and not sans
    if not blocked_answer:
        return "UNEXPECTED"
    used, hit = cname_walk(qname, uans, blockset)
    if hit is None:
        return "UNEXPECTED"
    if urcode == "NXDOMAIN" and all(t == "CNAME" for _, t, _ in uans) and used == len(uans):
        # Unbound keeps the CNAMEs up to the first blocked name, then NXDOMAIN.
        return "cname-chain"
    if qtype == "CNAME" and urcode == "NOERROR" and used == 1 and len(uans) == 1:
        # QTYPE=CNAME: Unbound does not follow the alias, so RPZ never sees
        # the target; sinkhole checks every CNAME target in the answer.
        return "cname-qtype"
    if urcode == "NOERROR":
        # Unbound 1.17 applies RPZ to CNAME targets only when it resolves
        # the chain, not when the chain comes from its cache
        # (NLnetLabs/unbound#954): ask it again with an empty cache.
        return "recheck"
    return "UNEXPECTED"


EXPLAIN = {
    "cname-chain": "the upstream's CNAME chain passes through a blocked name: sinkhole answers "
                   "NXDOMAIN with an empty answer section; Unbound's RPZ keeps the CNAMEs up to the "
                   "blocked name, then NXDOMAIN (documented)",
    "cname-qtype": "QTYPE=CNAME whose target is blocked: sinkhole blocks (it checks every CNAME "
                   "target in an answer); Unbound does not follow the alias for QTYPE=CNAME, so its "
                   "RPZ never sees the target (documented)",
    "unbound-cache": "Unbound answered a chain into a blocked name from its cache without applying "
                     "RPZ (NLnetLabs/unbound#954, Unbound 1.17); with its cache flushed it gives the "
                     "cname-chain answer; sinkhole blocks every time (documented, Unbound's bug)",
    "UNEXPECTED": "not explained: a sinkhole bug, or a new difference to document",
}


def cold_query(unbound, conf, port, name, qtype):
    """Flush Unbound's caches, then ask once: the answer of a cold Unbound."""
    ctl = os.path.join(os.path.dirname(unbound), "unbound-control")
    subprocess.run([ctl, "-c", conf, "flush_zone", "."], capture_output=True, timeout=10)
    subprocess.run([ctl, "-c", conf, "flush_requestlist"], capture_output=True, timeout=10)
    res = query_all(port, [(name, qtype, "recheck")])[0]
    return None if res[0] else canon(res[1])


def fmt(res):
    if res is None:
        return "(none)"
    rcode, ans = res
    return rcode + " " + (" | ".join(sorted(f"{o} {t} {r}" for o, t, r in ans)) or "-")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    r = sub.add_parser("run")
    r.add_argument("--queries", type=int, default=10000)
    r.add_argument("--seed", type=int, default=20261121)
    r.add_argument("--work", help="scratch folder (default: a new temp folder)")
    r.add_argument("--keep", action="store_true", help="keep the scratch folder")
    r.add_argument("--bin", default=os.environ.get("SINKHOLE_BIN", f"{ROOT}/target/release/sinkhole"))
    r.add_argument("--unbound", default=shutil.which("unbound") or "/usr/sbin/unbound")
    r.add_argument("--show", type=int, default=20, help="differences to print per kind")
    u = sub.add_parser("upstream")
    u.add_argument("port", type=int)
    u.add_argument("zone")
    a = ap.parse_args()
    if a.cmd == "upstream":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        run_upstream(a.port, a.zone)
        return 0
    if a.cmd != "run":
        ap.print_help()
        return 2
    return run(a)


def run(a):
    for p in (a.bin, a.unbound):
        if not os.access(p, os.X_OK):
            print(f"conformance: {p} missing (cargo build --release; apt-get install unbound)",
                  file=sys.stderr)
            return 2
    work = a.work or tempfile.mkdtemp(prefix="sinkhole-conformance.")
    os.makedirs(work, exist_ok=True)
    procs = []

    def stop_all():
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def on_signal(signum, _frame):
        stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        t0 = time.time()
        blocklist, zone, queries = gen_data(a.queries, a.seed)
        blockset = set(blocklist)
        with open(f"{work}/blocklist.txt", "w") as f:
            f.write("\n".join(blocklist) + "\n")
        write_rpz(blocklist, f"{work}/rpz.zone")
        with open(f"{work}/zone.json", "w") as f:
            json.dump(zone, f)
        with open(f"{work}/queries.txt", "w") as f:
            for name, t, cat in queries:
                f.write(f"{name} {t} {cat}\n")
        uport, sport, bport = free_port(), free_port(), free_port()
        with open(f"{work}/unbound.conf", "w") as f:
            f.write(unbound_conf(work, bport, uport))
        with open(f"{work}/sinkhole.toml", "w") as f:
            f.write(sinkhole_conf(work, sport, uport))
        log = lambda n: open(f"{work}/{n}", "w")  # noqa: E731
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "upstream",
                                       str(uport), f"{work}/zone.json"],
                                      stdout=log("upstream.out"), stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen([a.unbound, "-d", "-c", f"{work}/unbound.conf"],
                                      stdout=log("unbound.out"), stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen([a.bin, "serve", "--config", f"{work}/sinkhole.toml"],
                                      stdout=log("sinkhole.out"), stderr=subprocess.STDOUT))
        probe_name = "www." + blocklist[0]
        if not wait_rcode(uport, "ready.check.test", dns.rcode.NOERROR, procs):
            print(f"conformance: upstream did not start (see {work})", file=sys.stderr)
            return 2
        for port, who in ((bport, "unbound"), (sport, "sinkhole")):
            if not wait_rcode(port, probe_name, dns.rcode.NXDOMAIN, procs):
                print(f"conformance: {who} did not start (see {work}/{who}.out, {work}/{who}.log)",
                      file=sys.stderr)
                return 2
        setup = time.time() - t0
        t1 = time.time()
        res_s = query_all(sport, queries)
        t2 = time.time()
        res_u = query_all(bport, queries)
        qtime = (f"sinkhole {t2 - t1:.1f}s ({RETRIES[sport]} retries), "
                 f"unbound {time.time() - t2:.1f}s ({RETRIES[bport]} retries)")

        per_cat = defaultdict(Counter)
        per_kind = defaultdict(list)
        rechecked = 0
        with open(f"{work}/differences.txt", "w") as out:
            for (name, t, cat), rs, ru in zip(queries, res_s, res_u):
                cold = None
                if rs[0] or ru[0]:      # timeout or truncated: never expected
                    kind = "UNEXPECTED"
                    s = (f"({rs[0]})", frozenset()) if rs[0] else canon(rs[1])
                    u = (f"({ru[0]})", frozenset()) if ru[0] else canon(ru[1])
                else:
                    s, u = canon(rs[1]), canon(ru[1])
                    kind = classify(name, t, s, u, blockset)
                    if kind == "recheck":
                        rechecked += 1
                        cold = cold_query(a.unbound, f"{work}/unbound.conf", bport, name, t)
                        ok = cold is not None and classify(name, t, s, cold, blockset) == "cname-chain"
                        kind = "unbound-cache" if ok else "UNEXPECTED"
                per_cat[cat][kind] += 1
                per_cat[cat]["rcode " + u[0]] += 1
                if kind != "same":
                    per_kind[kind].append((cat, name, t, s, u, cold))
                    out.write(f"{kind} {cat} {name} {t}\n  sinkhole: {fmt(s)}\n  unbound:  {fmt(u)}\n")
                    if cold is not None:
                        out.write(f"  unbound, cache flushed: {fmt(cold)}\n")

        kinds = ["same", "cname-chain", "cname-qtype", "unbound-cache", "UNEXPECTED"]
        total = Counter()
        print(f"conformance: {len(queries)} queries, {len(blocklist)} listed names, seed {a.seed}; "
              f"setup {setup:.1f}s, queries: {qtime}, {rechecked} rechecked on a cold Unbound; "
              f"unbound {unbound_version(a.unbound)}")
        print(f"{'category':<19}{'queries':>8}" + "".join(f"{k:>14}" for k in kinds) + "   unbound rcodes")
        for cat in sorted(per_cat):
            c = per_cat[cat]
            n = sum(v for k, v in c.items() if not k.startswith("rcode "))
            rc = " ".join(f"{k[6:]}={v}" for k, v in sorted(c.items()) if k.startswith("rcode "))
            print(f"{cat:<19}{n:>8}" + "".join(f"{c[k]:>14}" for k in kinds) + f"   {rc}")
            for k, v in c.items():
                if not k.startswith("rcode "):
                    total[k] += v
        print(f"{'total':<19}{sum(total.values()):>8}" + "".join(f"{total[k]:>14}" for k in kinds))
        for kind in [k for k in kinds if k in per_kind]:
            rows = per_kind[kind]
            print(f"\n{kind}: {len(rows)} — {EXPLAIN[kind]}")
            where = f"all in {work}/differences.txt" if a.keep or a.work else "--keep keeps differences.txt"
            print(f"  first {min(a.show, len(rows))} ({where}):")
            for cat, name, t, s, u, cold in rows[:a.show]:
                print(f"  [{cat}] {name} {t}\n    sinkhole: {fmt(s)}\n    unbound:  {fmt(u)}")
                if cold is not None:
                    print(f"    unbound, cache flushed: {fmt(cold)}")
        ok = total["UNEXPECTED"] == 0
        print(f"\nresult: {'PASS' if ok else 'FAIL'}: {total['UNEXPECTED']} unexpected differences "
              f"({total['same']} identical, {sum(total.values()) - total['same'] - total['UNEXPECTED']} documented)")
        return 0 if ok else 1
    finally:
        stop_all()
        if a.keep or a.work:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def unbound_version(path):
    try:
        out = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=5).stdout
        return next((l.split()[1] for l in out.splitlines() if l.startswith("Version")), "?")
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
