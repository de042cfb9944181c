# sinkhole: the two commands a new user needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr
DESTDIR ?=
FUZZ_SECONDS ?= 60
# Debian packages the tests use (dig as a real DNS client).
TEST_PACKAGES := bind9-dnsutils
TEST_COMMANDS := dig

.PHONY: all build release run test test-deps fmt-check clippy unit bench fuzz clean

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

# Each fuzz target for FUZZ_SECONDS (needs cargo-fuzz and a nightly toolchain).
fuzz:
	@command -v cargo-fuzz >/dev/null || { echo "cargo install cargo-fuzz first"; exit 2; }
	cd fuzz && for t in $$(cargo fuzz list); do cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

clean:
	$(CARGO) clean
