"""Airflow glue for Skein. The engine (``skein``) never imports Airflow; this package does.

- ``campaign_dags``: builds one DAG per campaign file (used by ``dags/``).
- ``settings_loader``: loads ``airflow_settings.yaml`` into the metadata DB.
- ``portal`` and ``portal_plugin``: the portal, an AirflowPlugin (FastAPI app at ``/skein``).

Airflow puts ``plugins/`` on ``sys.path`` in every component, which is how the
DAG files import this package.
"""
