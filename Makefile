# ferry: top-level entry points. Every target that needs packages installs
# the missing ones first (scripts/deps.sh), so a fresh Debian 12 works.
BUILD      ?= build
ASAN_BUILD ?= build/asan
GUEST_OUT  := $(BUILD)/guest
MESON_OPTS ?=

.PHONY: all ferry asan guest linux-guest test unit integration demo bench fuzz soak deps clean certs

all: ferry guest

deps:
	@scripts/deps.sh build

ferry: deps
	@test -f $(BUILD)/build.ninja || meson setup $(BUILD) $(MESON_OPTS) >/dev/null
	@ninja -C $(BUILD) ferry

# The test build: sanitizers, and the FERRY_TEST_* fault knobs (a release build
# never reads them). An older test build directory is reconfigured once.
asan: deps
	@grep -qs -- -DFERRY_TEST_HOOKS $(ASAN_BUILD)/build.ninja || \
	  meson setup $(if $(wildcard $(ASAN_BUILD)/build.ninja),--reconfigure) $(ASAN_BUILD) \
	    -Db_sanitize=address,undefined -Db_lundef=false -Dtest_hooks=true >/dev/null
	@ninja -C $(ASAN_BUILD)

guest: deps
	@$(MAKE) --no-print-directory -C guest BUILD=$(CURDIR)/$(GUEST_OUT)

linux-guest:
	@scripts/deps.sh build linux
	@scripts/linux-guest.sh $(GUEST_OUT)

test:
	@scripts/deps.sh build test linux bench
	@$(MAKE) --no-print-directory asan guest linux-guest
	@tests/run.sh

unit:
	@$(MAKE) --no-print-directory asan
	@FERRY_ONLY=unit tests/run.sh

fuzz:
	@scripts/deps.sh build test
	@scripts/fuzz.sh $(FUZZ_SECONDS)

# SOAK_N ping-pong migrations with random faults (tests/soak/soak.py); not in
# make test. Rewrites docs/RELIABILITY.md.
SOAK_N ?= 200
soak:
	@scripts/deps.sh build test
	@$(MAKE) --no-print-directory asan guest
	@SOAK_N=$(SOAK_N) /usr/bin/python3 tests/soak/soak.py --report docs/RELIABILITY.md

# A test CA and TLS certificates for two hosts, src and dst (scripts/certs.sh).
certs:
	@scripts/certs.sh $(BUILD)/certs src dst

demo: ferry guest
	@scripts/demo.sh

# ferry vs QEMU/KVM: boot, snapshot/restore, live migration (bench/bench_all.py).
# BENCH_REPEAT=N, BENCH_ONLY=name[,name]; results in bench/results/, plots in
# bench/plots/, docs/BENCHMARKS.md regenerated (not for a BENCH_ONLY run).
bench:
	@export BENCH_T0=$$(date +%s.%N) && scripts/deps.sh build bench && \
	  $(MAKE) --no-print-directory ferry guest && /usr/bin/python3 bench/bench_all.py

clean:
	rm -rf $(BUILD)
