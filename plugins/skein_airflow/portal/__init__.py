"""The Skein portal: campaigns, their consumers and a person's controls, served by Airflow's
own API server under ``/skein`` (``skein_airflow.portal_plugin`` registers it).

- ``app``: the FastAPI app (``create_app``), security headers, errors without internals;
- ``auth``: who the request is (Airflow's ``get_user``: bearer token or the UI's ``_token``
  cookie) and what they may do (Airflow's ``requires_access_dag`` on the campaign's DAG);
- ``api``: the JSON API, ``/skein/api/v1/...`` (schema: ``/skein/openapi.json``);
- ``pages``: the HTML pages (Jinja2, autoescaped) and their CSS and JS;
- ``hitl``: the campaign's pending approval, answered through Airflow's own HITL update;
- ``sources``: where the read models read (the campaign store, run directories, files).

Thin on purpose: what a page shows and what an action does is ``skein.views`` and
``skein.controls``; this package decides only who may see and do it. Airflow's modules are
imported inside functions: every Airflow process loads plugins, and only the API server
needs them.
"""
