# Skein on Astro Runtime: Airflow 3.3, Python 3.11 (requirements.lock is compiled
# for 3.11; Runtime 3.x defaults to 3.12, so pick the -python-3.11 variant).
#
# We use the `-base` Runtime image, which leaves out the standard image's ONBUILD
# steps (install packages.txt with apt, `pip install -r requirements.txt`, copy
# the project), and do those steps here: our requirements.txt is the *input* of
# the lock, so installing it would re-resolve versions. The image installs
# requirements.lock, exactly what CI tested, then Skein itself without deps.
# apache-airflow is pinned in the lock too, so a Runtime whose Airflow differs
# from the lock's is brought to the lock's version: change both together.
#
# Build: docker build -t skein .   (or astro dev start / astro deploy)
# Campaigns: mount them and point SKEIN_CAMPAIGNS_DIR at them, e.g.
#   -v $PWD/.skein/demo:/usr/local/airflow/.skein/demo (the default location).
ARG RUNTIME_IMAGE=astrocrpublic.azurecr.io/runtime:3.3-2-python-3.11-base
FROM ${RUNTIME_IMAGE}

WORKDIR /usr/local/airflow

# Dependencies first, so editing code does not invalidate this (slow) layer.
USER root
COPY --chown=astro:0 requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

# dbt-core in its own virtualenv at a fixed path, never in Airflow's environment (it would
# downgrade protobuf, python-dateutil and others there): Skein runs it only as a child
# process on a sandbox copy of a consumer's dbt project (docs/discovery.md). Same lock as
# `make setup` (requirements-dbt.lock); SKEIN_DBT_PYTHON tells Skein where it is. Root-owned:
# the tasks (user astro) run it and cannot change it.
ENV SKEIN_DBT_PYTHON=/usr/local/skein-dbt/bin/python
COPY --chown=astro:0 requirements-dbt.lock ./
RUN python -m venv /usr/local/skein-dbt \
    && /usr/local/skein-dbt/bin/pip install --no-cache-dir --disable-pip-version-check \
        -r requirements-dbt.lock \
    && /usr/local/skein-dbt/bin/python -c "import dbt.cli.main, dbt.adapters.duckdb"

# The project: dags/, plugins/, include/ (the skein package), pyproject.toml...
COPY --chown=astro:0 . .
# Editable, like `make setup`: the code Airflow runs is the code under include/.
RUN pip install --no-cache-dir --no-deps -e . \
    && python -c "import skein.spec" \
    && PYTHONPATH=plugins python -c "import skein_airflow.campaign_dags"
# Mount points of docker-compose.yaml and the Helm values (deploy/helm/values.yaml): run
# directories and campaigns shared by every worker, task logs. Owned by astro so that a
# volume mounted there starts out writable by the tasks.
RUN mkdir -p /usr/local/airflow/shared /usr/local/airflow/logs \
    && chown astro:0 /usr/local/airflow/shared /usr/local/airflow/logs

USER astro
