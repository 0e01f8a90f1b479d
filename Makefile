# The two commands the README starts with, and what they stand on.
SWIFT ?= swift
export PATH := /opt/swift/usr/bin:$(PATH)

.PHONY: all build test demo deps lint-man bench clean

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

# Throughput of the hot paths, as ratios against reference runs (release build).
bench: deps
	$(SWIFT) build -c release --product usbredir-bench
	$$($(SWIFT) build -c release --show-bin-path)/usbredir-bench

lint-man:
	mandoc -Tlint -Wwarning man/*.[0-9]

clean:
	rm -rf .build out
