"""Read models of the portal (the Airflow plugin ``skein_airflow.portal`` serves them) and
its actions: pure functions over the campaign store, the run directories and the campaign
files; no Airflow, no HTTP.

- ``sources``: where they read (``Sources``), the campaigns and their runs;
- ``status``: each consumer's status as one SQL expression (filter, count, page in SQL);
- ``campaigns``: the catalog's rows, a campaign's waves, owners and pending approval;
- ``consumers``: a filtered page of consumers, one consumer's diff, dry run, agents, audit;
- ``burndown``: consumers still on the old dataset over time;
- ``actions``: pause, resume, skip, escalate, release, retry, audited with the person's identity;
- ``bulk``: those controls on many consumers at once, and the consumer list as CSV;
- ``owners``: an owning team's progress across campaigns.
"""

from skein.views.actions import (
    actor,
    escalate_consumer,
    pause_campaign,
    record_answer,
    refresh_summary,
    release_consumer,
    resume_campaign,
    retry_failed,
    skip_consumer,
)
from skein.views.bulk import BulkResult, bulk_control, consumers_csv
from skein.views.burndown import Burndown, BurndownPoint, burndown
from skein.views.campaigns import (
    CampaignDetail,
    CampaignRow,
    CampaignState,
    OwnerRow,
    WaveView,
    campaign_detail,
    catalog,
    catalog_row,
)
from skein.views.consumers import (
    AuditEntry,
    AuditPage,
    audit_page,
    ConsumerDetail,
    ConsumerFilter,
    ConsumerPage,
    ConsumerSummary,
    consumer_detail,
    consumer_page,
)
from skein.views.owners import OwnerCampaign, owner_progress, owners
from skein.views.sources import RunInfo, Sources, campaign_ids, campaign_spec, runs
from skein.views.status import STATUSES, ConsumerStatus

__all__ = [
    "BulkResult", "OwnerCampaign", "bulk_control", "consumers_csv", "owner_progress", "owners",
    "STATUSES", "AuditEntry", "AuditPage", "audit_page", "Burndown", "BurndownPoint", "CampaignDetail", "CampaignRow",
    "CampaignState", "ConsumerDetail", "ConsumerFilter", "ConsumerPage", "ConsumerStatus",
    "ConsumerSummary", "OwnerRow", "RunInfo", "Sources", "WaveView", "actor", "burndown",
    "campaign_detail", "campaign_ids", "campaign_spec", "catalog", "catalog_row",
    "consumer_detail", "consumer_page", "escalate_consumer", "pause_campaign", "record_answer",
    "refresh_summary", "release_consumer", "resume_campaign", "retry_failed", "runs", "skip_consumer",
]
