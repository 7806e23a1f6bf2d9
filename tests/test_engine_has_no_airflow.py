"""The engine (``skein``) never imports Airflow: dags/ and plugins/ wire it in.

Every skein module is imported in a fresh interpreter (a pytest process may have
imported Airflow already), then ``sys.modules`` is checked after each import, so
a failure names the module that pulled Airflow in.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import importlib, json, pkgutil, sys, traceback
    import skein

    def airflow_loaded():
        return sorted(m for m in sys.modules if m == "airflow" or m.startswith("airflow."))

    names = ["skein"] + sorted(m.name for m in pkgutil.walk_packages(skein.__path__, "skein."))
    result = {"modules": names, "culprit": None, "airflow": [], "broken": {}}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            result["broken"][name] = traceback.format_exc(limit=-3)
        if airflow_loaded() and result["culprit"] is None:
            result["culprit"], result["airflow"] = name, airflow_loaded()[:5]
    print(json.dumps(result))
""")


def test_no_skein_module_imports_airflow():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    assert "skein.spec" in result["modules"]  # the walk found the engine
    assert result["culprit"] is None, (
        f"importing {result['culprit']} imported Airflow ({', '.join(result['airflow'])}); "
        "the engine must stay Airflow-free: put Airflow code in plugins/skein_airflow")
    assert result["broken"] == {}, "skein modules failed to import:\n" + "\n".join(
        f"{name}:\n{tb}" for name, tb in result["broken"].items())
