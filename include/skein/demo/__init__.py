"""The demo fleet: a deterministic playground for discovery and migration.

``build_demo_fleet(out, consumers, seed)`` writes a DuckDB warehouse, consumer git
repositories, the ``plays-v2`` campaign and ``ground_truth.json``, the independent oracle
the discovery tests compare against. See ``skein.demo.fleet``.
"""

from skein.demo.fleet import build_demo_fleet, plan_fleet

__all__ = ["build_demo_fleet", "plan_fleet"]
