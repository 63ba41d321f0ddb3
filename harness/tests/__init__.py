"""Harness tests: /usr/bin/python3 -m unittest -v harness.tests.test_NAME (from the repo root)."""
