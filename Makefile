# Mesh in C: top-level build.
#   make            libmesh (.so and .a) and the workloads
#   make DEBUG=1    the same with invariant checks and asserts on
#   make test       install what is missing (as root; scripts/packages.txt), build everything,
#                   run every test (ends "N passed, N failed")
#   make soak       MINUTES (2) of the multithreaded soak against ALLOC (libmesh, glibc, jemalloc)
#   make bench      install what is missing (as root), run the benchmark, write results
#   make browser    the browser benchmark's pages (npm ci + esbuild; browser/README.md)
#   make install PREFIX=/usr/local
PREFIX ?= /usr/local
PYTHON := /usr/bin/python3
export DEBUG

.PHONY: all libmesh workloads test soak bench bench-alloc plots paper paper-run redis-latency redis-build install clean browser

all: libmesh workloads

libmesh:
	$(MAKE) -C libmesh

workloads: libmesh
	@if [ -f workloads/Makefile ]; then $(MAKE) -C workloads; fi

# The package check comes first: as another user it stops here with the
# apt-get line to run, before any test fails for want of ruby or redis.
test:
	scripts/packages.sh test bench
	$(MAKE) all
	$(MAKE) -C libmesh tests
	@if [ -f workloads/Makefile ]; then $(MAKE) -C workloads tests; fi
	scripts/run-tests.sh

# Not part of `make test`: minutes of heap churn, fork, signal handlers and
# datagrams at once, every byte checked (scripts/soak.sh says how to pick
# the allocator, the seed and the threads).
MINUTES ?= 2
ALLOC ?= libmesh
soak: libmesh
	$(MAKE) -C libmesh soak
	MINUTES=$(MINUTES) ALLOC=$(ALLOC) SEED=$(SEED) THREADS=$(THREADS) WITHOUT=$(WITHOUT) scripts/soak.sh

# The default benchmark matrix (FULL=1: paper-sized scales), results and plots.
bench: all
	$(MAKE) -C libmesh bench
	$(PYTHON) -m harness bench $(if $(filter 1,$(FULL)),--full)

# The allocation micro-benchmark: churn and cross-thread churn, time ratios.
bench-alloc: all
	$(MAKE) -C libmesh bench
	scripts/alloc-bench.sh

# From results/latest.json, or on a fresh clone the matrix in the committed results/paper.json.
plots:
	$(PYTHON) -m harness plot

# The TodoMVC pages WebKit runs for Figure 6: rebuilt only when a source or the lock changed.
BROWSER_SOURCES := $(wildcard browser/apps/*/app.js browser/apps/*/app.jsx) \
	browser/package.json browser/package-lock.json browser/build.sh
browser: browser/dist/.built
browser/dist/.built: $(BROWSER_SOURCES)
	browser/build.sh

# paper-figures.md and plots/paper/ from the committed results/paper.json (seconds);
# `make paper-run` measures everything again (about 40 minutes, 11 of them WebKit, as root).
PAPER_RESULTS ?= results/paper.json
PAPER_OUT ?= paper-figures.md
PAPER_PLOTS ?= plots/paper
# Figure 6 on WebKit, measured on its own (`harness paper run --figures webkit --name paper-webkit`).
PAPER_WEBKIT ?= results/paper-webkit.json

paper:
	$(PYTHON) -m harness paper report --results $(PAPER_RESULTS) --webkit $(PAPER_WEBKIT) --out $(PAPER_OUT) --plots-dir $(PAPER_PLOTS)

paper-run: all browser
	$(PYTHON) -m harness paper run

# The redis-latency figure alone (about 10 minutes, as root): measured into
# results/paper-redis-latency.json (not committed), merged into
# $(PAPER_RESULTS), and the report rewritten. paper-run measures it too.
REDIS_LATENCY_TRIALS ?= 3
redis-latency: all
	$(PYTHON) -m harness paper run --figures redis-latency --trials $(REDIS_LATENCY_TRIALS) --name paper-redis-latency --no-report
	$(PYTHON) -m harness paper merge --results $(PAPER_RESULTS) --new results/paper-redis-latency.json --out $(PAPER_RESULTS)
	$(MAKE) paper

# redis-server from Debian's source of the installed version, twice (bundled
# jemalloc; system malloc with the defrag patch), cached in build/redis/;
# paper-run does this itself.  A few minutes, once.
redis-build:
	$(PYTHON) -m harness paper redis-build

install: libmesh
	$(MAKE) -C libmesh install PREFIX=$(PREFIX)

clean:
	$(MAKE) -C libmesh clean
	@if [ -f workloads/Makefile ]; then $(MAKE) -C workloads clean; fi
	rm -rf build browser/dist
