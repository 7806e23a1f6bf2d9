"""Simulation: run consumers on data in a sandbox and prove parity value by value.

This package holds the building blocks so far: ``sandbox`` (a locked-down DuckDB
session for consumer SQL), ``parity`` (old output vs new output) and ``worlds`` (the
warehouse's data, sampled, for both). Wiring them into
``skein plan`` with sampling, Great Expectations and evidence is the simulation issue.
"""
