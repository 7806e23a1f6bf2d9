"""Template families of direct consumers: queries that read ``analytics.plays`` itself.

Each template writes one query and declares by hand which columns of each dataset it
touches (docs/discovery.md, "Column lineage"); nothing here parses SQL. Each docstring
says which rule the template exercises, e.g. which column is deliberately *not* touched.

>>> import random
>>> from skein.demo.model import Slot
>>> draft = count_star(Slot(3, 0, random.Random(1), "sandbox", {}))
>>> draft.reads
{'analytics.plays': frozenset()}
"""

from __future__ import annotations

from skein.demo.model import (COUNTRIES, DEVICES, DUCK_REPOS, GENRES, PLAYS_COLUMNS, SOURCE,
                              Draft, Family, Slot, sql_block, touch)

USERS, TRACKS = "analytics.users", "analytics.tracks"


def _month(s: Slot) -> str:
    """A first-of-month timestamp literal inside the data's year (2024)."""
    return f"TIMESTAMP '2024-{s.rng.randint(2, 11):02d}-01'"


def alias_filter(s: Slot) -> Draft:
    """Table alias, a filter, a GROUP BY: touches the grouped and the filtered column."""
    a = s.choice(["p", "pl", "play"])
    group = s.choice(["device", "country", "track_id"])
    filt_col, filt = s.choice([
        ("country", f"{a}.country = '{s.choice(COUNTRIES)}'"),
        ("ms_played", f"{a}.ms_played >= {s.rng.randrange(10, 120) * 1000}"),
        ("played_at", f"{a}.played_at >= {_month(s)}"),
    ])
    text = f"""
-- Plays per {group}, filtered
SELECT {a}.{group}, count(*) AS n_plays
FROM analytics.plays AS {a}
WHERE {filt}
GROUP BY {a}.{group}
ORDER BY n_plays DESC
"""
    return Draft(f"plays_by_{group}_{s.tag}.sql", sql_block(text), touch(SOURCE, group, filt_col),
                 variant=f"group_{group}")


def cte_unused(s: Slot) -> Draft:
    """CTEs: a column a CTE selects but nothing downstream uses is not touched."""
    if s.variant(2) == 0:
        unused = s.choice(["device", "country", "ms_played"])
        text = f"""
WITH recent AS (
    SELECT user_id, track_id, {unused}, played_at
    FROM analytics.plays
    WHERE played_at >= {_month(s)}
)
SELECT user_id, count(DISTINCT track_id) AS distinct_tracks
FROM recent
GROUP BY user_id
"""
        return Draft(f"recent_listeners_{s.tag}.sql", sql_block(text),
                     touch(SOURCE, "user_id", "track_id", "played_at"), variant="unused_column")
    # A star inside a CTE is not a star in the output: only what the outer query uses.
    col = s.choice(["device", "country"])
    text = f"""
WITH p AS (
    SELECT * FROM analytics.plays
)
SELECT {col}, avg(ms_played) AS avg_ms
FROM p
GROUP BY {col}
"""
    return Draft(f"avg_ms_by_{col}_{s.tag}.sql", sql_block(text), touch(SOURCE, col, "ms_played"),
                 variant="star_in_cte")


def derived_table(s: Slot) -> Draft:
    """A derived table whose ``device`` is unused unless the outer query filters on it."""
    outer = s.rng.random() < 0.5
    where = f"\nWHERE d.device = '{s.choice(DEVICES)}'" if outer else ""
    text = f"""
SELECT d.country, round(avg(d.secs), 1) AS avg_secs
FROM (
    SELECT country, ms_played / 1000.0 AS secs, device
    FROM analytics.plays
    WHERE ms_played > 0
) AS d{where}
GROUP BY d.country
"""
    cols = ("country", "ms_played") + (("device",) if outer else ())
    return Draft(f"avg_secs_by_country_{s.tag}.sql", sql_block(text), touch(SOURCE, *cols),
                 variant="outer_filter" if outer else "unused_column")


def exists_correlated(s: Slot) -> Draft:
    """Correlated EXISTS; ``device`` is unqualified but only plays has it."""
    neg = s.choice(["", "NOT "])
    since = s.rng.random() < 0.5
    extra = f"\n      AND p.played_at >= {_month(s)}" if since else ""
    text = f"""
SELECT u.user_id, u.plan
FROM analytics.users AS u
WHERE {neg}EXISTS (
    SELECT 1
    FROM analytics.plays AS p
    WHERE p.user_id = u.user_id
      AND device = '{s.choice(DEVICES)}'{extra}
)
"""
    cols = ("user_id", "device") + (("played_at",) if since else ())
    return Draft(f"users_on_device_{s.tag}.sql", sql_block(text),
                 touch(SOURCE, *cols) | touch(USERS, "user_id", "plan"),
                 variant="not_exists" if neg else "exists")


def in_subquery(s: Slot) -> Draft:
    """IN (SELECT ...) and a correlated scalar subquery, both over plays."""
    scalar = s.variant(2) == 0
    last = (",\n       (SELECT max(p2.played_at) FROM analytics.plays AS p2"
            " WHERE p2.track_id = t.track_id) AS last_played_at") if scalar else ""
    text = f"""
SELECT t.title{last}
FROM analytics.tracks AS t
WHERE t.track_id IN (
    SELECT track_id FROM analytics.plays WHERE country = '{s.choice(COUNTRIES)}'
)
"""
    cols = ("track_id", "country") + (("played_at",) if scalar else ())
    return Draft(f"tracks_played_in_{s.tag}.sql", sql_block(text),
                 touch(SOURCE, *cols) | touch(TRACKS, "track_id", "title"),
                 variant="in_and_scalar" if scalar else "in_only")


def join_collision(s: Slot) -> Draft:
    """users.country / users.user_id share names with plays: only resolution tells them apart."""
    v = s.variant(4)
    join = "FROM analytics.plays AS p\nJOIN analytics.users AS u ON u.user_id = p.user_id"
    if v == 0:  # only the users' country: plays.country is NOT touched
        body, cols, ucols = ("SELECT u.country, count(*) AS n_plays\n" + join
                             + "\nGROUP BY u.country"), ("user_id",), ("user_id", "country")
    elif v == 1:
        body = ("SELECT u.country AS home_country, p.country AS play_country, count(*) AS n\n"
                + join + "\nGROUP BY 1, 2")
        cols, ucols = ("user_id", "country"), ("user_id", "country")
    elif v == 2:
        body = ("SELECT u.plan, count(*) AS abroad_plays\n" + join
                + "\nWHERE p.country <> u.country\nGROUP BY u.plan")
        cols, ucols = ("user_id", "country"), ("user_id", "plan", "country")
    else:
        body = ("SELECT u.user_id, u.signup_at, min(p.played_at) AS first_play\n" + join
                + "\nGROUP BY u.user_id, u.signup_at")
        cols, ucols = ("user_id", "played_at"), ("user_id", "signup_at")
    return Draft(f"user_country_mix_{s.tag}.sql", sql_block(body),
                 touch(SOURCE, *cols) | touch(USERS, *ucols), variant=f"collision_{v}")


def join_unqualified(s: Slot) -> Draft:
    """Unqualified columns in a join: resolvable only with both tables' schemas."""
    if s.variant(2) == 0:
        measure, mcol = s.choice([("sum(ms_played) AS total_ms", "ms_played"),
                                  ("count(DISTINCT device) AS devices", "device")])
        text = f"""
SELECT title, genre, {measure}
FROM analytics.plays AS p
JOIN analytics.tracks AS t ON p.track_id = t.track_id
WHERE NOT explicit
GROUP BY title, genre
"""
        return Draft(f"track_totals_{s.tag}.sql", sql_block(text),
                     touch(SOURCE, "track_id", mcol)
                     | touch(TRACKS, "track_id", "title", "genre", "explicit"),
                     variant="tracks")
    text = """
SELECT plan, count(DISTINCT p.user_id) AS listeners
FROM analytics.plays AS p
JOIN analytics.users AS u ON u.user_id = p.user_id
WHERE signup_at < played_at
GROUP BY plan
"""
    return Draft(f"listeners_by_plan_{s.tag}.sql", sql_block(text),
                 touch(SOURCE, "user_id", "played_at")
                 | touch(USERS, "user_id", "plan", "signup_at"),
                 variant="users")


def using_join(s: Slot) -> Draft:
    """JOIN ... USING: the join column is touched on the plays side."""
    if s.variant(2) == 0:
        text = f"""
SELECT user_id, plan, count(*) AS n_plays
FROM analytics.plays
JOIN analytics.users USING (user_id)
WHERE played_at >= {_month(s)}
GROUP BY user_id, plan
"""
        return Draft(f"plays_per_plan_{s.tag}.sql", sql_block(text),
                     touch(SOURCE, "user_id", "played_at") | touch(USERS, "user_id", "plan"),
                     variant="users")
    text = """
SELECT genre, count(*) AS n_plays
FROM analytics.plays
JOIN analytics.tracks USING (track_id)
GROUP BY genre
"""
    return Draft(f"plays_per_genre_{s.tag}.sql", sql_block(text),
                 touch(SOURCE, "track_id") | touch(TRACKS, "track_id", "genre"), variant="tracks")


def select_star(s: Slot) -> Draft:
    """``SELECT *`` in the output touches every column, legacy_flag included."""
    text = f"""
SELECT *
FROM analytics.plays
WHERE device = '{s.choice(DEVICES)}'
ORDER BY played_at DESC
LIMIT {s.rng.choice([10, 50, 100])}
"""
    return Draft(f"latest_plays_{s.tag}.sql", sql_block(text), touch(SOURCE, *PLAYS_COLUMNS),
                 variant="star")


def table_star(s: Slot) -> Draft:
    """``p.*`` over plays in a join: every plays column, none of the tracks' beyond the named."""
    text = f"""
SELECT p.*, t.title
FROM analytics.plays AS p
JOIN analytics.tracks AS t ON t.track_id = p.track_id
WHERE t.genre = '{s.choice(GENRES)}'
"""
    return Draft(f"genre_plays_{s.tag}.sql", sql_block(text),
                 touch(SOURCE, *PLAYS_COLUMNS) | touch(TRACKS, "track_id", "title", "genre"),
                 variant="table_star")


def window_qualify(s: Slot) -> Draft:
    """Window functions and QUALIFY: PARTITION BY / ORDER BY columns are touched."""
    if s.variant(2) == 0:
        text = """
SELECT user_id, track_id, played_at,
       sum(ms_played) OVER (PARTITION BY user_id ORDER BY played_at) AS running_ms
FROM analytics.plays
QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY played_at DESC) = 1
"""
        return Draft(f"last_play_per_user_{s.tag}.sql", sql_block(text),
                     touch(SOURCE, "user_id", "track_id", "played_at", "ms_played"),
                     variant="running_total")
    text = f"""
SELECT play_id, track_id,
       avg(ms_played) OVER (PARTITION BY country) AS avg_country_ms
FROM analytics.plays
QUALIFY rank() OVER (PARTITION BY device ORDER BY ms_played DESC) <= {s.rng.randint(2, 5)}
"""
    return Draft(f"longest_per_device_{s.tag}.sql", sql_block(text),
                 touch(SOURCE, "play_id", "track_id", "ms_played", "country", "device"),
                 variant="rank")


def group_ordinal(s: Slot) -> Draft:
    """GROUP BY / ORDER BY ordinals refer to projected columns; HAVING count(*) to none."""
    first, second = s.rng.sample(["country", "device", "track_id", "user_id"], 2)
    text = f"""
SELECT {first}, {second}, count(*) AS n_plays
FROM analytics.plays
GROUP BY 1, 2
HAVING count(*) > {s.rng.randint(1, 3)}
ORDER BY 3 DESC
"""
    return Draft(f"top_{first}_{second}_{s.tag}.sql", sql_block(text),
                 touch(SOURCE, first, second), variant="ordinals")


def quoted_identifiers(s: Slot) -> Draft:
    """Quoted identifiers (lowercase, so they name the same columns)."""
    text = f"""
SELECT "P"."track_id", count(*) AS "Play Count"
FROM "analytics"."plays" AS "P"
WHERE "P"."device" = '{s.choice(DEVICES)}'
GROUP BY "P"."track_id"
ORDER BY "Play Count" DESC
LIMIT 10
"""
    return Draft(f"top_tracks_quoted_{s.tag}.sql", sql_block(text),
                 touch(SOURCE, "track_id", "device"), variant="quoted")


def count_star(s: Slot) -> Draft:
    """``COUNT(*)`` touches no column: the consumer still reads the dataset (columns [])."""
    text = s.choice([
        "SELECT count(*) AS n_plays FROM analytics.plays",
        "SELECT count(*) FROM analytics.plays AS p",
        "SELECT 'analytics.plays' AS dataset, count(*) AS n_rows\nFROM analytics.plays",
    ])
    return Draft(f"row_count_{s.tag}.sql", sql_block(text), touch(SOURCE), variant="count_star")


def legacy_flag_reader(s: Slot) -> Draft:
    """Reads the dropped ``legacy_flag``: escalate."""
    v = s.variant(3)
    if v == 0:
        text = """
SELECT device,
       sum(CASE WHEN legacy_flag THEN 1 ELSE 0 END) AS legacy_plays,
       count(*) AS n_plays
FROM analytics.plays
GROUP BY device
"""
        cols = ("device", "legacy_flag")
    elif v == 1:
        text, cols = "SELECT count(*) AS n_legacy\nFROM analytics.plays\nWHERE legacy_flag", \
            ("legacy_flag",)
    else:
        text = (f"SELECT DISTINCT user_id\nFROM analytics.plays\n"
                f"WHERE NOT legacy_flag AND country = '{s.choice(COUNTRIES)}'")
        cols = ("user_id", "legacy_flag", "country")
    return Draft(f"legacy_share_{s.tag}.sql", sql_block(text), touch(SOURCE, *cols),
                 variant=f"legacy_{v}")


DIRECT_FAMILIES = (
    Family("alias_filter", "table aliases, WHERE, GROUP BY", alias_filter, DUCK_REPOS),
    Family("cte_unused", "CTE column nobody uses is not touched; star inside a CTE",
           cte_unused, DUCK_REPOS),
    Family("derived_table", "derived-table subquery with an unused column", derived_table,
           DUCK_REPOS),
    Family("exists_correlated", "correlated EXISTS, unqualified inner column",
           exists_correlated, DUCK_REPOS),
    Family("in_subquery", "IN (SELECT ...) and a correlated scalar subquery", in_subquery,
           DUCK_REPOS),
    Family("join_collision", "users.country/user_id vs plays.country/user_id",
           join_collision, DUCK_REPOS),
    Family("join_unqualified", "unqualified columns in joins, resolved by schemas",
           join_unqualified, DUCK_REPOS),
    Family("using_join", "JOIN ... USING", using_join, DUCK_REPOS),
    Family("select_star", "SELECT * over plays: all columns, escalate", select_star, DUCK_REPOS),
    Family("table_star", "p.* over plays in a join: all columns, escalate", table_star,
           DUCK_REPOS),
    Family("window_qualify", "window PARTITION BY/ORDER BY and QUALIFY", window_qualify,
           DUCK_REPOS),
    Family("group_ordinal", "GROUP BY / ORDER BY ordinals, HAVING count(*)", group_ordinal,
           DUCK_REPOS),
    Family("quoted_identifiers", "quoted identifiers", quoted_identifiers, DUCK_REPOS),
    Family("count_star", "COUNT(*) only: columns []", count_star, DUCK_REPOS),
    Family("legacy_flag_reader", "reads the dropped column: escalate", legacy_flag_reader,
           DUCK_REPOS),
)
