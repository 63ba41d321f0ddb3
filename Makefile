# Mesh in C: top-level build.
#   make            libmesh (.so and .a) and the workloads
#   make DEBUG=1    the same with invariant checks and asserts on
#   make test       build everything and run every test (ends "N passed, N failed")
#   make bench      install what is missing (as root), run the benchmark, write results
#   make install PREFIX=/usr/local
PREFIX ?= /usr/local
PYTHON := /usr/bin/python3
export DEBUG

.PHONY: all libmesh workloads test check-tests bench plots install clean

all: libmesh workloads

libmesh:
	$(MAKE) -C libmesh

workloads: libmesh
	@if [ -f workloads/Makefile ]; then $(MAKE) -C workloads; fi

test: all
	$(MAKE) -C libmesh tests
	@if [ -f workloads/Makefile ]; then $(MAKE) -C workloads tests; fi
	scripts/run-tests.sh

install: libmesh
	$(MAKE) -C libmesh install PREFIX=$(PREFIX)

clean:
	$(MAKE) -C libmesh clean
	@if [ -f workloads/Makefile ]; then $(MAKE) -C workloads clean; fi
	rm -rf build
