"""Every action the audit log records, by name; the store keeps the value as plain text.

A ``StrEnum``, so an action compares equal to the string the store holds and a typo is an
``AttributeError`` instead of a silently unmatched query.

>>> Action.APPLIED == "applied", Action("wave_failed") is Action.WAVE_FAILED
(True, True)
>>> Action.APPLIED in CONSUMER_STATES, Action.MONITORED in CONSUMER_STATES
(True, False)
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    # the run
    RUN_STARTED = "run_started"
    DISCOVERED = "discovered"
    SIMULATED = "simulated"
    PLANNED = "planned"
    FINISHED = "finished"
    # per consumer, before approval
    PATCHED = "patched"
    ESCALATED = "escalated"  # an agent gave the consumer to a human
    RETRIED = "retried"  # a refuted patch went back to the LLM agent
    # approval
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_SKIPPED = "approval_skipped"
    APPROVED = "approved"
    REJECTED = "rejected"
    # waves
    WAVE_STARTED = "wave_started"
    WAVE_SKIPPED = "wave_skipped"
    WAVE_PASSED = "wave_passed"
    WAVE_FAILED = "wave_failed"
    # per consumer, applying and watching
    APPLY_STARTED = "apply_started"
    APPLIED = "applied"
    APPLY_SKIPPED = "apply_skipped"  # already applied earlier: not written again
    APPLY_FAILED = "apply_failed"
    VERIFIED = "verified"  # unchanged consumer of a wave: nothing to write
    MONITORED = "monitored"
    MONITOR_FAILED = "monitor_failed"
    # rollback
    ROLLBACK_STARTED = "rollback_started"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_SKIPPED = "rollback_skipped"
    ROLLBACK_FAILED = "rollback_failed"
    CAMPAIGN_ROLLED_BACK = "campaign_rolled_back"
    ROLLBACK_INCOMPLETE = "rollback_incomplete"
    ROLLBACK_RESUMED = "rollback_resumed"  # a run finished the interrupted rollback of a run
    UNLOCKED = "unlocked"  # a person freed a campaign a dead run still held
    # a person's controls (the portal), campaign-wide: run id ``skein.controls.NO_RUN``
    CAMPAIGN_PAUSED = "campaign_paused"  # no wave applies anything until resumed
    CAMPAIGN_RESUMED = "campaign_resumed"
    CONSUMER_SKIPPED = "consumer_skipped"  # left out of every later wave
    CONSUMER_ESCALATED = "consumer_escalated"  # given to a human: left out of later waves too
    CONSUMER_RELEASED = "consumer_released"  # a skip or escalation lifted: back in later waves
    RETRY_REQUESTED = "retry_requested"  # a failed consumer, marked for the next run
    APPROVAL_ANSWERED = "approval_answered"  # answered in the portal (the run records its decision)
    # what the apply step did about them
    APPLY_PAUSED = "apply_paused"  # the campaign is paused: the wave stopped, the rest not applied
    HELD = "held"  # a skipped or escalated consumer: not applied
    # notifications
    NOTIFIED = "notified"
    NOTIFY_FAILED = "notify_failed"


# Events that change a consumer's state; the others (notified, monitored...) only inform.
CONSUMER_STATES = (Action.APPLY_STARTED, Action.APPLIED, Action.APPLY_FAILED, Action.MONITOR_FAILED,
                   Action.ROLLED_BACK, Action.ROLLBACK_FAILED)

# A person's decisions that keep a consumer out of later waves.
HOLDS = (Action.CONSUMER_SKIPPED, Action.CONSUMER_ESCALATED)
# ... and the one that lifts them: the latest of these decides whether a consumer is held.
HOLD_DECISIONS = (*HOLDS, Action.CONSUMER_RELEASED)
