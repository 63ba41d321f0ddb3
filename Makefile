# Mesh in C: top-level build.
#   make            libmesh (.so and .a) and the workloads
#   make DEBUG=1    the same with invariant checks and asserts on
#   make test       build everything and run every test (ends "N passed, N failed")
#   make bench      install what is missing (as root), run the benchmark, write results
#   make install PREFIX=/usr/local
PREFIX ?= /usr/local
PYTHON := /usr/bin/python3
export DEBUG

.PHONY: all libmesh workloads test bench bench-alloc plots paper paper-run redis-build install clean

all: libmesh workloads

libmesh:
	$(MAKE) -C libmesh

workloads: libmesh
	@if [ -f workloads/Makefile ]; then $(MAKE) -C workloads; fi

test: all
	$(MAKE) -C libmesh tests
	@if [ -f workloads/Makefile ]; then $(MAKE) -C workloads tests; fi
	scripts/run-tests.sh

# The default benchmark matrix (FULL=1: paper-sized scales), results and plots.
bench: all
	$(MAKE) -C libmesh bench
	$(PYTHON) -m harness bench $(if $(filter 1,$(FULL)),--full)

# The allocation micro-benchmark: churn and cross-thread churn, time ratios.
bench-alloc: all
	$(MAKE) -C libmesh bench
	scripts/alloc-bench.sh

plots:
	$(PYTHON) -m harness plot

# paper-figures.md and plots/paper/ from the committed results/paper.json (seconds);
# `make paper-run` measures everything again (about 20 minutes, as root).
PAPER_RESULTS ?= results/paper.json
PAPER_OUT ?= paper-figures.md
PAPER_PLOTS ?= plots/paper

paper:
	$(PYTHON) -m harness.paper report $(PAPER_RESULTS) --out $(PAPER_OUT) --plots $(PAPER_PLOTS)

paper-run: all
	$(PYTHON) -m harness.paper run

# redis-server from Debian's source of the installed version, twice (bundled
# jemalloc; system malloc with the defrag patch), cached in build/redis/;
# paper-run does this itself.  A few minutes, once.
redis-build:
	$(PYTHON) -m harness.paper.redis_build

install: libmesh
	$(MAKE) -C libmesh install PREFIX=$(PREFIX)

clean:
	$(MAKE) -C libmesh clean
	@if [ -f workloads/Makefile ]; then $(MAKE) -C workloads clean; fi
	rm -rf build
