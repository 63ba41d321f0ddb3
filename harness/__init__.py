"""The Mesh benchmark harness: run workloads under allocators, measure physical
memory through memory cgroups, time the runs, and plot the results.

Run it with Debian's interpreter: /usr/bin/python3 -m harness --help
"""

__version__ = "1.0"
