"""Lists broken Skein campaign files as an Airflow DAG import error.

This file defines no DAG. When a campaign file in $SKEIN_CAMPAIGNS_DIR is
invalid, it raises, and the UI shows "file:line: field: message" under Dag
Import Errors. The valid campaigns' DAGs come from ``skein_campaigns.py`` and
keep running: an import error in that file would stop all of them.
"""

from skein_airflow.campaign_dags import CampaignFilesError, build_campaign_dags

_campaigns = build_campaign_dags()
if _campaigns.errors:
    raise CampaignFilesError(_campaigns.error_report())
