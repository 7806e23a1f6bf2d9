"""Lists broken Skein campaign files as an Airflow DAG import error.

This file defines no DAG. When a campaign file in $SKEIN_CAMPAIGNS_DIR is
invalid (it does not load, or another file has its id: then both), it raises, and the UI shows
"file:line: field: message" under Dag Import Errors. The valid campaigns' DAGs
come from ``skein_campaigns.py`` and keep running: an import error in that file
would stop all of them. (A valid file whose DAG Airflow refuses to build is
logged by ``skein_campaigns.py`` in the dag-processor log.)
"""

from skein_airflow.campaign_dags import CampaignFilesError, build_campaign_dags

# Checking the files is enough here; building every DAG again would double the parse time.
_campaigns = build_campaign_dags(build=False)
if _campaigns.errors:
    raise CampaignFilesError(_campaigns.error_report())
