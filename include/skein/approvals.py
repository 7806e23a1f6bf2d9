"""The approval's options, as approvers read them, and the scope each one approves.

Kept apart from the pipeline so the Airflow operator can build its options at DAG parse time
without importing the engine.

>>> CAMPAIGN_OPTIONS["Approve canary only"], OPTION_OF_SCOPE["none"]
('canary', 'Reject')
"""

from __future__ import annotations

from typing import Literal

Scope = Literal["all", "canary", "none"]
CAMPAIGN_OPTIONS: dict[str, Scope] = {"Approve all": "all", "Approve canary only": "canary",
                                      "Reject": "none"}
WAVE_OPTIONS: dict[str, Scope] = {"Continue": "all", "Stop": "none"}  # before each later wave
OPTION_OF_SCOPE: dict[Scope, str] = {scope: option for option, scope in CAMPAIGN_OPTIONS.items()}
