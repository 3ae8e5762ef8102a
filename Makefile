# The two commands of the README: `make demo` and `make test`.
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup build demo test check integration release-tier lint
setup:
	scripts/setup.sh

build: setup
	$(ENV) cargo build --workspace

demo: build
	$(ENV) cargo run -q -p facesweep -- demo

# `make test` (CI's entry, .ci/run) runs three tiers in order, the cheapest first, so that a
# formatting slip or a failing unit test stops it before the long tiers; each tier prints
# its start and end (docs/benchmarks.md, "CI", has their times on a clean clone).
test: check integration release-tier

# Tier 1, for day-to-day work: formatting, proto, module cycles, chart, lints, unit tests.
check: setup
	@echo "== tier 1 (check) started $$(date +%T)"
	$(ENV) cargo fmt --all --check
	$(ENV) buf lint
	$(ENV) if git rev-parse -q --verify HEAD~1 >/dev/null; then buf breaking --against '.git#ref=HEAD~1'; fi
	scripts/module_cycles.py
	scripts/helm_check.sh
	$(ENV) cargo clippy -q --workspace --all-targets -- -D warnings
	$(ENV) cargo test -q --workspace --lib --bins -- --test-threads=2
	$(ENV) cargo test -q --workspace --doc
	@echo "== tier 1 (check) done $$(date +%T)"

# Tier 2: every integration test on real parts (Postgres, HTTP, Consul, the model, processes),
# the Python client against a live mesh, and every grpcurl line of docs/operations.md.
integration: setup
	@echo "== tier 2 (integration) started $$(date +%T)"
	$(ENV) cargo build --workspace --bins
	$(ENV) cargo test --workspace --no-fail-fast --test '*' -- --test-threads=2
	scripts/python_client_test.sh
	$(ENV) scripts/check_operations.sh
	@echo "== tier 2 (integration) done $$(date +%T)"

# Tier 3: the release build's GPU-tier report (small sizes without a GPU) and the images.
release-tier: setup
	@echo "== tier 3 (release, images) started $$(date +%T)"
	scripts/gpu_check.sh
	scripts/image_test.sh
	@echo "== tier 3 (release, images) done $$(date +%T)"

lint: setup
	$(ENV) cargo clippy --workspace --all-targets -- -D warnings

.PHONY: bench bench-detector
bench: bench-detector bench-results bench-fetch

# Detector throughput: Rust in-process and through gRPC, then the Python baseline.
bench-detector: setup
	$(ENV) cargo bench -p facesweep-detector --bench detector
	$(ENV) $$FACESWEEP_VENV/bin/python scripts/bench_detector_python.py models/retinaface_mnet025.pt

.PHONY: bench-results chaos
# Persisted URL results per second into a durable embedded Postgres.
bench-results: setup
	$(ENV) cargo bench -p facesweep-results --bench results

# Chaos at full size: 10,000 URLs, 20 kill -9s (CI runs 2,000 / 5 inside `make test`).
chaos: setup
	$(ENV) cargo build --workspace --bins
	$(ENV) CHAOS_URLS=10000 CHAOS_KILLS=20 cargo test -p facesweep-tests --test it chaos::killing -- --nocapture

.PHONY: chaos-net
# Network chaos as root: each service in its own network namespace (198.18.0.0/15), cuts,
# a 50 Mbit detector link, an isolated delegator, operator and rogue throughout; 10 minutes
# of partitions (`make test` runs a short version: CHAOS_NET_SECS=45, 600 URLs).
chaos-net: setup
	$(ENV) cargo build --workspace --bins
	$(ENV) CHAOS_NET_SECS=600 CHAOS_NET_URLS=6000 cargo test -p facesweep-tests --test it chaos_net:: -- --nocapture

.PHONY: bench-scale
# The control plane at scale (release build, durable Postgres): SCALE_URLS=1000000 by default;
# SCALE_PROCESS=N takes only N of them through lease → record → complete.
SCALE_URLS ?= 1000000
bench-scale: setup
	$(ENV) cargo build --release -p facesweep
	$(ENV) target/release/facesweep bench scale --urls $(SCALE_URLS) $(if $(SCALE_PROCESS),--process $(SCALE_PROCESS))

.PHONY: bench-fetch
# Fetch tier vs its decode floor (per image kind) vs img2dataset behind nginx on loopback:
# CORPUS=dir or URLS=file (default: scripts/make_corpus.py's web mix), OLD_BIN=an older build.
bench-fetch: setup
	scripts/bench_fetch.sh

.PHONY: image image-test
# OCI images with podman (no Docker daemon, no registry): localhost/facesweep and
# localhost/facesweep-cuda, tagged with the chart's appVersion (docs/operations.md).
image: setup
	scripts/image.sh

# Both images, their layer caching, then the mesh and the CLI as real containers.
image-test: setup
	scripts/image_test.sh

.PHONY: gpu-check gpu-bundle
# Every detector-tier measurement in one run; small sizes without a GPU (report in $$OUT).
gpu-check: setup
	scripts/gpu_check.sh

# What a GPU machine needs (it has no cargo, no PostgreSQL): the stripped release CLI, the
# model, the photos and a PostgreSQL server in .gpu (git-ignored, ~50 MB: carry it, run
# FACESWEEP_BIN=.gpu/facesweep scripts/gpu_check.sh).
gpu-bundle: setup
	$(ENV) cargo build --release -p facesweep
	rm -rf .gpu && mkdir -p .gpu/models .gpu/samples
	strip -o .gpu/facesweep target/release/facesweep
	cp models/retinaface_mnet025.pt models/retinaface_mnet025.json .gpu/models/
	cp $${FACESWEEP_SAMPLES:-$$HOME/.cache/facesweep/samples}/* .gpu/samples/
	scripts/bundle_postgres.sh .gpu/pg.tar.xz
	du -sh .gpu
