"""Template families in other dialects: Snowflake (finance-reporting), BigQuery (marketing-bq).

Their dialect comes from the ``skein/dialect`` annotation of the nearest catalog-info.yaml;
the tests parse them in that dialect, transpile them to DuckDB and run them.

>>> import random
>>> from skein.demo.model import Slot
>>> sorted(bigquery_except(Slot(26, 0, random.Random(1), "marketing-bq", {})).reads[SOURCE])
['country', 'device', 'ms_played', 'play_id', 'played_at', 'track_id', 'user_id']
"""

from __future__ import annotations

from skein.demo.model import (COUNTRIES, DEVICES, PLAYS_COLUMNS, SOURCE, Draft, Family, Slot,
                              sql_block, touch)
from skein.demo.templates_direct import USERS

def snowflake_report(s: Slot) -> Draft:
    """Snowflake: upper-case names, a database part to ignore, IFF, DATEADD, ``::``."""
    dev = s.choice(DEVICES)
    join = s.variant(2) == 1
    users = ("\nJOIN PROD.ANALYTICS.USERS AS U ON U.USER_ID = P.USER_ID" if join else "")
    extra = "U.COUNTRY AS HOME_COUNTRY,\n       " if join else ""
    text = f"""
-- Monthly listening hours per account, input to the revenue share
SELECT P.USER_ID,
       {extra}DATE_TRUNC('MONTH', P.PLAYED_AT) AS PLAY_MONTH,
       SUM(IFF(P.DEVICE = '{dev}', P.MS_PLAYED, 0)) / 3600000 AS {dev.upper()}_HOURS,
       COUNT(*) AS PLAYS
FROM PROD.ANALYTICS.PLAYS AS P{users}
WHERE P.PLAYED_AT >= DATEADD(DAY, -{s.rng.randint(30, 180)}, '2024-12-31'::DATE)
GROUP BY {"1, 2, 3" if join else "1, 2"}
"""
    reads = touch(SOURCE, "user_id", "played_at", "device", "ms_played")
    if join:
        reads |= touch(USERS, "user_id", "country")
    return Draft(f"monthly_hours_{s.tag}.sql", sql_block(text), reads,
                 variant="join_users" if join else "monthly")


def snowflake_qualify(s: Slot) -> Draft:
    """Snowflake QUALIFY in the treasury subfolder (its own catalog-info.yaml)."""
    a, b = s.rng.sample(COUNTRIES, 2)
    text = f"""
SELECT USER_ID, TRACK_ID, PLAYED_AT, MS_PLAYED
FROM ANALYTICS.PLAYS
WHERE COUNTRY IN ('{a}', '{b}')
QUALIFY ROW_NUMBER() OVER (PARTITION BY USER_ID ORDER BY PLAYED_AT DESC) = 1
"""
    return Draft(f"last_play_{s.tag}.sql", sql_block(text),
                 touch(SOURCE, "user_id", "track_id", "played_at", "ms_played", "country"),
                 variant="qualify", folder="treasury")


def bigquery_weekly(s: Slot) -> Draft:
    """BigQuery: backticked ``project.dataset.table``, TIMESTAMP_TRUNC, COUNTIF."""
    dev = s.choice(DEVICES)
    if s.variant(2) == 0:
        text = f"""
SELECT
  country,
  TIMESTAMP_TRUNC(played_at, WEEK) AS week,
  COUNTIF(device = '{dev}') AS {dev}_plays,
  COUNT(DISTINCT user_id) AS listeners
FROM `acme-prod.analytics.plays`
GROUP BY country, week
"""
        return Draft(f"weekly_reach_{s.tag}.sql", sql_block(text),
                     touch(SOURCE, "country", "played_at", "device", "user_id"), variant="weekly")
    text = f"""
SELECT u.plan, COUNT(*) AS plays
FROM `acme-prod.analytics.plays` AS p
JOIN `acme-prod.analytics.users` AS u USING (user_id)
WHERE p.country = '{s.choice(COUNTRIES)}'
GROUP BY u.plan
"""
    return Draft(f"plays_by_plan_{s.tag}.sql", sql_block(text),
                 touch(SOURCE, "user_id", "country") | touch(USERS, "user_id", "plan"),
                 variant="using")


def bigquery_except(s: Slot) -> Draft:
    """``SELECT * EXCEPT (legacy_flag)``: every column but the dropped one, so rewrite."""
    text = f"""
SELECT * EXCEPT (legacy_flag)
FROM `acme-prod.analytics.plays`
WHERE DATE(played_at) >= DATE '2024-{s.rng.randint(2, 11):02d}-01'
"""
    return Draft(f"plays_export_{s.tag}.sql", sql_block(text),
                 touch(SOURCE, *[c for c in PLAYS_COLUMNS if c != "legacy_flag"]),
                 variant="star_except")


FINANCE, MARKETING = ("finance-reporting",), ("marketing-bq",)
DIALECT_FAMILIES = (
    Family("snowflake_report", "Snowflake dialect, db.schema.table, upper case",
           snowflake_report, FINANCE),
    Family("snowflake_qualify", "Snowflake QUALIFY; subfolder catalog-info overrides owner",
           snowflake_qualify, FINANCE),
    Family("bigquery_weekly", "BigQuery backticked project.dataset.table", bigquery_weekly,
           MARKETING),
    Family("bigquery_except", "BigQuery SELECT * EXCEPT (legacy_flag): rewrite, not escalate",
           bigquery_except, MARKETING),
)
