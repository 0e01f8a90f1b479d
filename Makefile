# The two commands the README starts with, and what they stand on.
SWIFT ?= swift
export PATH := /opt/swift/usr/bin:$(PATH)

.PHONY: all build test demo deps lint-man bench clean fuzz fuzz-build fuzz-ci

all: build

deps:
	bash scripts/install-deps.sh --all

build: deps
	$(SWIFT) build

# The whole test suite: installs what it needs, then runs swift test.
test: deps
	bash scripts/run-tests.sh

# The main job on a ready demo: boots a VM, applies a profile, the guest reads the stick.
demo: deps
	bash scripts/demo.sh

# Speed and footprint as ratios against references measured in the same run
# (release builds): parser micro-benches; the engine against the C reference
# host (source-sink, loopback raw usbredir); the guest reading and writing our
# stick against QEMU's own usb-storage; memory and idle CPU of 8 idle sessions;
# a verdict per target of issue #9. BENCH_QUICK=1 runs a reduced set.
BENCH_OUT := out/bench
BENCH_C := Sources/usbredir-bench/reference

bench: deps $(BENCH_OUT)/usbredir-refhost $(BENCH_OUT)/usbredir-loadgen
	$(SWIFT) build -c release --product usbredir-bench
	$(SWIFT) build -c release --product usbredir
	bin=$$($(SWIFT) build -c release --show-bin-path) && \
	  $$bin/usbredir-bench --usbredir $$bin/usbredir \
	    --refhost $(BENCH_OUT)/usbredir-refhost --loadgen $(BENCH_OUT)/usbredir-loadgen \
	    --guest-script Sources/usbredir-bench/scripts/guest-bench.sh --out $(BENCH_OUT)

# The C side of the bench (not SwiftPM targets): gcc on libusbredirparser.
$(BENCH_OUT)/usbredir-%: $(BENCH_C)/%.c
	@mkdir -p $(BENCH_OUT)
	gcc -O2 -Wall -Wextra -o $@ $< $$(pkg-config --cflags --libs libusbredirparser-0.5)

# libFuzzer targets (Fuzz/): the usbredir parser, SPICE link and framing,
# the stick's SCSI/BOT layer, the profile loader. Each runs FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
FUZZ_CI_SECONDS ?= 10

fuzz-build:
	$(SWIFT) build
	python3 Fuzz/build.py

fuzz: deps fuzz-build
	bash Fuzz/run.sh $(FUZZ_SECONDS)

# What CI runs after the swift tests (scripts/run-tests.sh): an unoptimised
# fuzz build (quick to compile), every seed, then FUZZ_CI_SECONDS per target;
# about 2.5 minutes in all on 2 cores.
fuzz-ci:
	$(SWIFT) build
	FUZZ_OPT=-Onone python3 Fuzz/build.py
	bash Fuzz/run.sh $(FUZZ_CI_SECONDS)

lint-man:
	mandoc -Tlint -Wwarning man/*.[0-9]

clean:
	rm -rf .build out
