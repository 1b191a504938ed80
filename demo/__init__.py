"""The `make demo` workload: support-ticket extraction with instructor, run through semcache.

A package so the runner, the stub provider and the tests can share ``demo.app`` by import.
"""
