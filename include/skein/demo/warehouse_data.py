"""The demo warehouse: music-streaming tables generated in DuckDB SQL, then every dataset
the fleet produces, deployed as if its owners had run their code.

Randomness is ``hash(i, seed, salt)``, never ``random()``, so the same seed gives the
same rows. (The DuckDB file itself is not byte-identical across builds: DuckDB writes
random bytes into its file header. Its contents are; the tests compare those.)

>>> pick(("a", "b"), "salt", 7)
"(['a', 'b'])[1 + CAST(hash(i, 7, 'salt') % 2 AS INTEGER)]"
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import duckdb

from skein.demo.model import COUNTRIES, DEVICES, GENRES, PLANS, TARGET, ConsumerSpec

ROWS = {"users": 2000, "artists": 500, "tracks": 4000, "playlists": 1500,
        "subscriptions": 2500, "plays": 20000}
SCHEMAS = ("analytics", "staging", "analytics_v2", "analytics_views", "analytics_marts",
           "analytics_reporting", "growth", "legacy", "sandbox")
WORDS = ("blue", "night", "river", "golden", "echo", "wild", "neon", "paper", "silver", "quiet",
         "summer", "broken", "electric", "velvet", "midnight", "ocean", "fire", "glass")

FORWARD_SQL = """\
SELECT
    play_id,
    user_id AS account_id,
    track_id,
    played_at,
    CAST(ms_played / 1000 AS DECIMAL(12, 3)) AS duration_s,
    CAST(country AS ENUM(
        {enum1}
        {enum2}
    )) AS country_code,
    device
FROM analytics.plays
""".format(enum1=", ".join(f"'{c}'" for c in COUNTRIES[:8]) + ",",
           enum2=", ".join(f"'{c}'" for c in COUNTRIES[8:]))


def pick(options, salt: str, seed: int) -> str:
    """SQL choosing one of ``options`` for row ``i``, deterministically."""
    items = ", ".join(f"'{o}'" for o in options)
    return f"([{items}])[1 + CAST({rand(salt, seed)} % {len(options)} AS INTEGER)]"


def rand(salt: str, seed: int) -> str:
    """SQL for a pseudo-random UBIGINT of row ``i`` (one independent stream per salt)."""
    return f"hash(i, {seed}, '{salt}')"


def _seconds(salt: str, seed: int, span: int) -> str:
    """SQL for an interval of up to ``span`` seconds."""
    return f"to_seconds(CAST({rand(salt, seed)} % {span} AS BIGINT))"


def base_tables_sql(seed: int) -> list[str]:
    """CREATE statements for the base tables, the decoy and the migration target."""
    tables = (_users_sql, _artists_sql, _tracks_sql, _playlists_sql, _subscriptions_sql,
              _plays_sql, _staging_plays_sql)
    return [table(seed) for table in tables] + [f"CREATE TABLE {TARGET} AS\n{FORWARD_SQL}"]


_YEAR = 366 * 86400  # seconds


def _draws(seed: int):
    """``rand`` and ``pick`` for ``seed``, short enough to keep the SQL below readable."""
    return partial(rand, seed=seed), partial(pick, seed=seed)


def _users_sql(seed: int) -> str:
    r, p = _draws(seed)
    return f"""CREATE TABLE analytics.users AS
SELECT CAST(i AS BIGINT) AS user_id,
       'listener_' || lpad(CAST(i AS VARCHAR), 5, '0') AS display_name,
       {p(COUNTRIES, 'u_country')} AS country,
       TIMESTAMP '2019-01-01' + {_seconds('u_signup', seed, 5 * _YEAR)} AS signup_at,
       {p(PLANS, 'u_plan')} AS plan,
       CAST(1960 + {r('u_birth')} % 49 AS INTEGER) AS birth_year
FROM range(1, {ROWS['users'] + 1}) AS t(i)"""


def _artists_sql(seed: int) -> str:
    r, p = _draws(seed)
    return f"""CREATE TABLE analytics.artists AS
SELECT CAST(i AS BIGINT) AS artist_id,
       {p(WORDS, 'a_w1')} || ' ' || {p(WORDS, 'a_w2')} || 's' AS name,
       {p(COUNTRIES, 'a_country')} AS country,
       CAST(1960 + {r('a_formed')} % 64 AS INTEGER) AS formed_year
FROM range(1, {ROWS['artists'] + 1}) AS t(i)"""


def _tracks_sql(seed: int) -> str:
    r, p = _draws(seed)
    return f"""CREATE TABLE analytics.tracks AS
SELECT CAST(i AS BIGINT) AS track_id,
       CAST(1 + {r('t_artist')} % {ROWS['artists']} AS BIGINT) AS artist_id,
       {p(WORDS, 't_w1')} || ' ' || {p(WORDS, 't_w2')} AS title,
       CAST(90000 + {r('t_dur')} % 330000 AS BIGINT) AS duration_ms,
       {p(GENRES, 't_genre')} AS genre,
       DATE '2000-01-01' + CAST({r('t_rel')} % 8800 AS INTEGER) AS released_on,
       {r('t_expl')} % 5 = 0 AS explicit
FROM range(1, {ROWS['tracks'] + 1}) AS t(i)"""


def _playlists_sql(seed: int) -> str:
    r, p = _draws(seed)
    return f"""CREATE TABLE analytics.playlists AS
SELECT CAST(i AS BIGINT) AS playlist_id,
       CAST(1 + {r('pl_owner')} % {ROWS['users']} AS BIGINT) AS owner_user_id,
       {p(WORDS, 'pl_w1')} || ' ' || {p(GENRES, 'pl_genre')} AS name,
       TIMESTAMP '2020-01-01' + {_seconds('pl_created', seed, 4 * _YEAR)} AS created_at,
       {r('pl_public')} % 3 <> 0 AS is_public,
       CAST(5 + {r('pl_n')} % 120 AS INTEGER) AS n_tracks
FROM range(1, {ROWS['playlists'] + 1}) AS t(i)"""


def _subscriptions_sql(seed: int) -> str:
    r, p = _draws(seed)
    return f"""CREATE TABLE analytics.subscriptions AS
WITH s AS (
    SELECT i, {p(PLANS, 's_plan')} AS plan,
           TIMESTAMP '2021-01-01' + {_seconds('s_start', seed, 3 * _YEAR)} AS started_at
    FROM range(1, {ROWS['subscriptions'] + 1}) AS t(i)
)
SELECT CAST(i AS BIGINT) AS subscription_id,
       CAST(1 + {r('s_user')} % {ROWS['users']} AS BIGINT) AS user_id,
       plan, started_at,
       CASE WHEN {r('s_end')} % 3 = 0 THEN NULL
            ELSE started_at + {_seconds('s_len', seed, _YEAR)} END AS ended_at,
       CAST(CASE plan WHEN 'free' THEN 0 WHEN 'student' THEN 599 WHEN 'premium' THEN 1099
            ELSE 1799 END AS INTEGER) AS price_cents
FROM s ORDER BY subscription_id"""


def _plays_sql(seed: int) -> str:
    """Most plays happen in the listener's home country, some abroad, so that
    plays.country and users.country differ in the data as they do in meaning."""
    r, p = _draws(seed)
    return f"""CREATE TABLE analytics.plays AS
WITH raw AS (
    SELECT i, CAST(1 + {r('p_user')} % {ROWS['users']} AS BIGINT) AS user_id,
           TIMESTAMP '2024-01-01' + {_seconds('p_at', seed, 365 * 86400)} AS played_at
    FROM range(1, {ROWS['plays'] + 1}) AS t(i)
)
SELECT CAST(raw.i AS BIGINT) AS play_id,
       raw.user_id,
       CAST(1 + {r('p_track')} % {ROWS['tracks']} AS BIGINT) AS track_id,
       raw.played_at,
       CAST(1000 + {r('p_ms')} % 400000 AS BIGINT) AS ms_played,
       CASE WHEN {r('p_abroad')} % 10 < 8 THEN u.country
            ELSE {p(COUNTRIES, 'p_country')} END AS country,
       {p(DEVICES, 'p_device')} AS device,
       raw.played_at < TIMESTAMP '2024-04-01' AND {r('p_legacy')} % 4 = 0 AS legacy_flag
FROM raw JOIN analytics.users AS u ON u.user_id = raw.user_id
ORDER BY play_id"""


def _staging_plays_sql(seed: int) -> str:
    """The decoy: a staging copy of a tenth of the plays."""
    return f"""CREATE TABLE staging.plays AS
SELECT *, TIMESTAMP '2025-01-02 03:00:00' + to_seconds(play_id) AS loaded_at
FROM analytics.plays
WHERE play_id % 10 = {seed % 10}
ORDER BY play_id"""


def _literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def deploy_sql(spec: ConsumerSpec) -> list[str]:
    """Statements creating what ``spec`` produces, as its owners would have deployed it."""
    p = spec.produces
    if p is None or not spec.parses:
        return []
    if spec.kind == "view":
        stmts = [f"CREATE VIEW {p.name} AS\n{spec.text}"]
        if spec.comment:
            stmts.append(f"COMMENT ON VIEW {p.name} IS {_literal(spec.comment)}")
        return stmts
    if spec.kind == "dbt_model":
        what = "TABLE" if p.materialized == "table" else "VIEW"
        return [f"CREATE {what} {p.name} AS\n{spec.rendered}"]
    return [spec.deploy or spec.text]


def build_warehouse(path: Path, seed: int, specs: list[ConsumerSpec]) -> None:
    """Create the warehouse file at ``path`` (which must not exist)."""
    con = duckdb.connect(str(path))
    try:
        for schema in SCHEMAS:
            con.execute(f"CREATE SCHEMA {schema}")
        for stmt in base_tables_sql(seed):
            con.execute(stmt)
        for spec in specs:  # plan order: every upstream exists before its readers
            for stmt in deploy_sql(spec):
                con.execute(stmt)
        con.execute("CHECKPOINT")
    finally:
        con.close()
