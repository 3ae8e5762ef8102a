# The two commands of the README: `make demo` and `make test`.
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup build demo test lint
setup:
	scripts/setup.sh

build: setup
	$(ENV) cargo build --workspace

demo: build
	$(ENV) cargo run -q -p facesweep -- demo

test: setup
	$(ENV) buf lint
	$(ENV) cargo test --workspace -- --test-threads=2

lint: setup
	$(ENV) cargo clippy --workspace --all-targets -- -D warnings

.PHONY: bench bench-detector
bench: bench-detector

# Detector throughput: Rust in-process and through gRPC, then the Python baseline.
bench-detector: setup
	$(ENV) cargo bench -p facesweep-detector --bench detector
	$(ENV) $$FACESWEEP_VENV/bin/python scripts/bench_detector_python.py models/retinaface_mnet025.pt
