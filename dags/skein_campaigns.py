"""Airflow DAG factory: one DAG per Skein campaign file in $SKEIN_CAMPAIGNS_DIR.

dag_id ``skein__<campaign id>``. Broken campaign files are skipped here and
reported by ``skein_campaign_errors.py`` (see ``skein_airflow.campaign_dags``
for why). The glue lives in ``plugins/skein_airflow``; this file only publishes.
"""

from skein_airflow.campaign_dags import build_campaign_dags

# Airflow collects DAG objects from module globals.
globals().update(build_campaign_dags().dags)
