#!/usr/bin/env bash
# Create .venv and install the pinned lock plus Skein itself (editable, no deps).
# Called by `make setup`, which skips it while its stamp is newer than the lock.
# Prefers uv (fast); bootstraps uv into the venv with pip when it is not on PATH,
# and falls back to plain pip if even that fails.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv

need_311='import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'

if [[ -x $VENV/bin/python ]] && ! $VENV/bin/python -c "$need_311"; then
    echo "setup: $VENV uses $($VENV/bin/python --version 2>&1); Skein needs Python >= 3.11." >&2
    echo "setup: remove $VENV (make distclean) and run make setup again." >&2
    exit 1
fi
if [[ ! -x $VENV/bin/python ]]; then
    if ! command -v "$PYTHON" >/dev/null || ! "$PYTHON" -c "$need_311"; then
        echo "setup: need Python >= 3.11 as '$PYTHON' (set PYTHON=/path/to/python3.11)." >&2
        exit 1
    fi
    echo "setup: creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

uv=""
if command -v uv >/dev/null; then
    uv=$(command -v uv)
elif [[ -x $VENV/bin/uv ]]; then
    uv=$VENV/bin/uv
elif $VENV/bin/python -m pip install --quiet --disable-pip-version-check uv; then
    uv=$VENV/bin/uv
else
    echo "setup: could not install uv; falling back to pip (slower)." >&2
fi

if [[ -n $uv ]]; then
    echo "setup: installing requirements.lock with $uv"
    "$uv" pip install --quiet --python $VENV/bin/python -r requirements.lock
    "$uv" pip install --quiet --python $VENV/bin/python --no-deps -e .
else
    echo "setup: installing requirements.lock with pip"
    $VENV/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
    $VENV/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
fi
# dbt-core in its own environment (.venv-dbt): Skein runs it only as a child process on a
# sandbox copy of a consumer's dbt project (include/skein/dbt_sandbox.py). Installed next to
# Airflow it would downgrade protobuf, python-dateutil and others (docs/discovery.md).
DBT_VENV=.venv-dbt
if [[ -x $DBT_VENV/bin/python ]] && ! $DBT_VENV/bin/python -c "$need_311"; then
    echo "setup: $DBT_VENV uses an old Python; removing it" >&2
    rm -rf "$DBT_VENV"
fi
if [[ ! -x $DBT_VENV/bin/python ]]; then
    echo "setup: creating $DBT_VENV for dbt-core"
    base=$("$VENV/bin/python" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')
    "$base" -m venv "$DBT_VENV"
fi
if [[ -n $uv ]]; then
    echo "setup: installing requirements-dbt.lock into $DBT_VENV with $uv"
    "$uv" pip install --quiet --python $DBT_VENV/bin/python -r requirements-dbt.lock
else
    $DBT_VENV/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dbt.lock
fi
# Bytecode for every installed module, written once here: uv leaves it to the first import,
# and with PYTHONDONTWRITEBYTECODE set (as on our CI machines) that first import never
# writes it, so every process compiled Airflow, Great Expectations and the rest from
# source again (Great Expectations: 9 s to import instead of 4). Up-to-date files are skipped.
site=$($VENV/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "setup: compiling bytecode in $site"
$VENV/bin/python -m compileall -q -j 0 "$site" >/dev/null \
    || echo "setup: some installed files did not compile; Python compiles them when imported" >&2
dbt_site=$($DBT_VENV/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
$DBT_VENV/bin/python -m compileall -q -j 0 "$dbt_site" >/dev/null \
    || echo "setup: some files in $DBT_VENV did not compile" >&2
echo "setup: done ($($VENV/bin/python --version 2>&1), Airflow $($VENV/bin/python -c 'from importlib.metadata import version; print(version("apache-airflow"))'), dbt-core $($DBT_VENV/bin/python -c 'from importlib.metadata import version; print(version("dbt-core"))') in $DBT_VENV)"
