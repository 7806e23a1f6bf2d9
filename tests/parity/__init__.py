"""Parity suite: TPC-H and TPC-DS queries rewritten by the rule agent for migrated fact
tables must return exactly what the originals return (see harness.py)."""
