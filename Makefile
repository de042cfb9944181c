# sinkhole: the two commands a new user needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr
DESTDIR ?=
FUZZ_SECONDS ?= 60
# Debian packages the tests use (dig as a real DNS client; systemd for
# systemd-analyze/systemd-sysusers checks of the unit; strace to compare the
# syscalls sinkhole makes with the unit's SystemCallFilter; chromium, run
# headless, for the console's browser test).
TEST_PACKAGES := bind9-dnsutils systemd strace chromium openssl curl
TEST_COMMANDS := dig systemd-analyze systemd-sysusers strace chromium openssl curl

.PHONY: all build release run test test-deps fmt-check clippy unit bench fuzz clean
.PHONY: install deb deb-tools deb-check
.PHONY: conformance soak overload bench-reload bench-attack

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# Serve DNS on 127.0.0.1:5353 with the lists in ./blocklists/ (embedded default config).
run: release
	./target/release/sinkhole serve

# Install what the tests need from Debian packages, only when missing and only as root.
test-deps:
	@missing=0; for c in $(TEST_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing $(TEST_PACKAGES)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_PACKAGES) </dev/null; \
	  else echo "warning: $(TEST_COMMANDS) missing and not root; tests that need them will fail"; fi; \
	fi

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) test --all-targets

test: test-deps fmt-check clippy unit

bench: release
	$(CARGO) bench --bench matcher

# Each fuzz target for FUZZ_SECONDS (default 60; FUZZ_SECONDS=600 for the
# 10-minute runs in the README), one after another, starting from the seeds
# in fuzz/seeds/<target>/ (new inputs go to fuzz/corpus/<target>/, crashes
# to fuzz/artifacts/<target>/ and stop the run). cargo-fuzz passes `-Z`
# flags, which a stable toolchain accepts with RUSTC_BOOTSTRAP=1; no nightly
# is needed. FUZZ_SANITIZER=address (default: the stable toolchain ships
# the ASan runtime) or none (faster, still catches panics and overflows).
# FUZZ_TARGETS="dns_request config" runs only those.
FUZZ_SANITIZER ?= address
FUZZ_TARGETS ?=
FUZZ_ENV := RUSTC_BOOTSTRAP=1
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && targets="$(FUZZ_TARGETS)"; [ -n "$$targets" ] || targets=$$($(FUZZ_ENV) $(CARGO) fuzz list); \
	for t in $$targets; do \
	  mkdir -p corpus/$$t seeds/$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  $(FUZZ_ENV) $(CARGO) fuzz run --sanitizer $(FUZZ_SANITIZER) $$t corpus/$$t seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 || exit 1; \
	done

clean:
	$(CARGO) clean

# ------------------------------------------------------------- reliability
# Answers compared with Unbound's (same upstream, same list as RPZ) for
# 10,000 generated questions; installs unbound and dnspython when missing (as root).
conformance: release
	benches/conformance.sh

# SOAK_SECONDS (default 600) of dnsperf load, a list push every 5 s, audit
# log on; lost queries, RSS start/end, reloads applied, audit verify.
soak: release
	benches/soak.sh

# resperf ramp past saturation: max throughput, shed count, RSS, recovery.
overload: release
	benches/overload.sh

# Issue 4's reload figures for N = 3,500 and 1,000,000 (RELOAD_N="..."):
# rename() to enforcement, peak/steady RSS, lost queries under dnsperf
# during RELOADS (20) pushes; REL_MODE=sighup|cmd for the other triggers.
# Not part of `make test` (about 5-10 minutes, needs dnsperf).
bench-reload: release
	benches/reload.sh

# Issue 17's random-subdomain flood: sinkhole (defaults, and with
# limits.upstream_qps_per_zone) and Unbound (ratelimit off and on) at
# ATTACK_RATES (10k 30k 60k qps) for ATTACK_SECONDS (20): legitimate
# lookups, flood answer rate, victim-zone upstream qps, RSS. Needs dnsperf,
# dnsdist, unbound (installed from Debian when missing, as root). Not part
# of `make test` (about 6 minutes).
bench-attack: release
	benches/attack.sh

# Issue 13's registry dump figures: parse rate (target >= 50 MB/s) and
# peak memory for a generated 1,000,000-entry windows-1251 dump.xml, and
# the load path's peak RSS against the compiled snapshot (about 1 minute).
.PHONY: bench-dump
bench-dump: release
	benches/dump.sh

# Issue 12's HTTP front: proxied vs direct latency (median of three runs)
# and throughput, CPU per proxied request, memory per open connection.
# Python stubs and client, about a minute.
.PHONY: bench-web
bench-web: release
	benches/web.sh

# ---------------------------------------------------------------- packaging
# `make install` builds a release binary and installs it with the systemd
# unit, sysusers entry, example configuration and sample lists. DESTDIR
# stages into a directory; PREFIX moves the binary and data (the unit is
# rewritten to match). BIN=path installs an already built binary instead.
BIN ?= target/release/sinkhole
UNITDIR ?= /lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
DATADIR ?= $(PREFIX)/share/sinkhole
DOCDIR ?= $(PREFIX)/share/doc/sinkhole
SAMPLE_LISTS := blocklists/sample-crypto.txt blocklists/sample-registry.csv

install: $(if $(filter target/release/sinkhole,$(BIN)),release)
	install -Dm755 $(BIN) $(DESTDIR)$(PREFIX)/bin/sinkhole
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DATADIR)/blocklists $(DESTDIR)/etc/sinkhole/lists
	sed -e 's#/usr/bin/sinkhole#$(PREFIX)/bin/sinkhole#g' -e 's#/usr/share/doc/sinkhole#$(DOCDIR)#g' \
	  systemd/sinkhole.service > $(DESTDIR)$(UNITDIR)/sinkhole.service
	chmod 644 $(DESTDIR)$(UNITDIR)/sinkhole.service
	install -Dm644 systemd/sinkhole.sysusers $(DESTDIR)$(SYSUSERSDIR)/sinkhole.conf
	install -m644 $(SAMPLE_LISTS) blocklists/FORMAT.md $(DESTDIR)$(DATADIR)/blocklists/
	@# Never overwrite an operator's configuration or lists.
	@if [ -e $(DESTDIR)/etc/sinkhole/sinkhole.toml ]; then \
	  install -m644 systemd/sinkhole.toml.example $(DESTDIR)/etc/sinkhole/sinkhole.toml.dist; \
	  echo "kept /etc/sinkhole/sinkhole.toml; the new example is sinkhole.toml.dist"; \
	else install -m644 systemd/sinkhole.toml.example $(DESTDIR)/etc/sinkhole/sinkhole.toml; fi
	@if [ -z "$$(ls -A $(DESTDIR)/etc/sinkhole/lists)" ]; then \
	  install -m644 $(SAMPLE_LISTS) $(DESTDIR)/etc/sinkhole/lists/; fi
	@if [ -e README.md ]; then install -Dm644 README.md $(DESTDIR)$(DOCDIR)/README.md; fi
	@if [ -z "$(DESTDIR)" ]; then \
	  echo "next: systemd-sysusers sinkhole.conf && systemctl daemon-reload && systemctl enable --now sinkhole"; fi

# A Debian package in target/debian/ (metadata: [package.metadata.deb] in Cargo.toml).
deb: deb-tools
	$(CARGO) deb

deb-tools:
	@command -v cargo-deb >/dev/null 2>&1 || $(CARGO) install cargo-deb --locked

# Build the package and check what it holds (tests/integration/systemd.rs, ignored by default).
deb-check: deb
	$(CARGO) test --test integration -- --ignored deb_
