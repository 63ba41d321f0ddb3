# Mesh in C: top-level build.
#   make            libmesh (.so and .a) and the workloads
#   make DEBUG=1    the same with invariant checks and asserts on
#   make test       build everything and run every test (ends "N passed, N failed")
#   make bench      install what is missing (as root), run the benchmark, write results
#   make install PREFIX=/usr/local
PREFIX ?= /usr/local
PYTHON := /usr/bin/python3
export DEBUG

.PHONY: all libmesh workloads test bench bench-alloc plots install clean

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

install: libmesh
	$(MAKE) -C libmesh install PREFIX=$(PREFIX)

clean:
	$(MAKE) -C libmesh clean
	@if [ -f workloads/Makefile ]; then $(MAKE) -C workloads clean; fi
	rm -rf build
