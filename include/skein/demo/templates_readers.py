"""Template families that read products (levels 2 and 3) or are not impacted at all.

A reader picks an upstream producer made earlier (``Slot.pick``) and declares which of
its columns it touches; the ground truth maps those back to plays through the
producer's declared lineage.

>>> import random
>>> from skein.demo.model import Slot
>>> draft = staging_decoy(Slot(35, 0, random.Random(1), "sandbox", {}))
>>> sorted(draft.reads["staging.plays"])
['device', 'loaded_at']
"""

from __future__ import annotations

from skein.demo.model import (DBT_REPO, DEVICES, DUCK_REPOS, GENRES, VIEW_SCHEMA, WAREHOUSE,
                              Draft, Family, Owner, Produced, Slot, dbt_relation, lineage,
                              sql_block, touch)
from skein.demo.templates_producers import DBT, TRACKS, owned, unowned


# -- level 2 readers -----------------------------------------------------------------

def clean_reader(s: Slot) -> Draft:
    """Reads a repository view: aggregate, ``SELECT *``, ``count(*)`` or a join."""
    up = s.pick("clean").produces.name
    v = s.variant(4)
    if v == 0:
        text = (f"SELECT account, sum(secs) AS total_secs\nFROM {up}\n"
                f"WHERE device = '{s.choice(DEVICES)}'\nGROUP BY account\n"
                "ORDER BY total_secs DESC\nLIMIT 20")
        cols = ("account", "secs", "device")
    elif v == 1:
        text = f"SELECT *\nFROM {up}\nWHERE play_date >= DATE '2024-{s.rng.randint(2, 11):02d}-01'"
        cols = ("play_id", "account", "track_id", "play_date", "secs", "country", "device")
    elif v == 2:
        text, cols = f"SELECT count(*) AS n_rows\nFROM {up}", ()
    else:
        text = (f"SELECT t.genre, avg(c.secs) AS avg_secs\nFROM {up} AS c\n"
                "JOIN analytics.tracks AS t ON t.track_id = c.track_id\nGROUP BY t.genre")
        cols = ("secs", "track_id")
    extra = touch(TRACKS, "track_id", "genre") if v == 3 else {}
    return Draft(f"clean_usage_{s.tag}.sql", sql_block(text), touch(up, *cols) | extra,
                 variant=("aggregate", "star", "count_star", "join")[v])


def flagged_reader_legacy(s: Slot) -> Draft:
    """Reads legacy_flag through a view: escalate although transitive."""
    up = s.pick("flagged").produces.name
    if s.variant(2) == 0:
        text = (f"SELECT user_id, count(*) AS legacy_plays\nFROM {up}\nWHERE legacy_flag\n"
                "GROUP BY user_id")
        cols = ("user_id", "legacy_flag")
    else:
        text, cols = f"SELECT play_id, legacy_flag\nFROM {up}", ("play_id", "legacy_flag")
    return Draft(f"legacy_audit_{s.tag}.sql", sql_block(text), touch(up, *cols),
                 variant=("filter", "project")[s.variant(2)])


def flagged_reader_plain(s: Slot) -> Draft:
    """Reads the same view without legacy_flag: verify."""
    up = s.pick("flagged").produces.name
    text = f"""
SELECT f.track_id, count(DISTINCT f.user_id) AS listeners
FROM {up} AS f
JOIN analytics.tracks AS t ON t.track_id = f.track_id
WHERE t.genre = '{s.choice(GENRES)}'
GROUP BY f.track_id
"""
    return Draft(f"genre_listeners_{s.tag}.sql", sql_block(text),
                 touch(up, "track_id", "user_id") | touch(TRACKS, "track_id", "genre"),
                 variant="join")


def daily_reader(s: Slot) -> Draft:
    """Reads an aggregated view; count(*) columns carry no source column."""
    up = s.pick("user_daily").produces.name
    if s.variant(2) == 0:
        text = (f"SELECT user_id, play_date, n_plays\nFROM {up}\n"
                f"WHERE n_plays >= {s.rng.randint(2, 4)}\nORDER BY n_plays DESC")
        cols = ("user_id", "play_date", "n_plays")
    else:
        text = (f"SELECT play_date, sum(total_ms) / 3600000.0 AS hours\nFROM {up}\n"
                "GROUP BY play_date")
        cols = ("play_date", "total_ms")
    return Draft(f"daily_usage_{s.tag}.sql", sql_block(text), touch(up, *cols),
                 variant=("heavy_users", "hours")[s.variant(2)])


def totals_reader(s: Slot) -> Draft:
    """Reads a table a CTAS script produced."""
    up = s.pick("country_totals").produces.name
    if s.variant(2) == 0:
        text, cols = (f"SELECT country, total_ms / n_plays AS avg_ms\nFROM {up}\n"
                      "ORDER BY avg_ms DESC"), ("country", "total_ms", "n_plays")
    else:
        text, cols = f"SELECT count(*) AS big_countries\nFROM {up}\nWHERE n_plays > 100", \
            ("n_plays",)
    return Draft(f"country_report_{s.tag}.sql", sql_block(text), touch(up, *cols),
                 variant=("average", "count")[s.variant(2)])


# -- level 3 -------------------------------------------------------------------------

def dbt_report(s: Slot) -> Draft:
    """dbt model on a mart; its folder's ``+schema: reporting`` (dbt_project.yml) applies."""
    up = s.pick("fct")
    model = f"rpt_listening_{s.tag}"
    alias = f"listening_minutes_{s.tag}" if s.variant(2) == 1 else None
    config = (f"{{{{ config(materialized='view', alias='{alias}') }}}}" if alias
              else "{{ config(materialized='view') }}")
    text = f"""
{config}

select
    account_id,
    play_date,
    n_plays,
    total_secs / 60.0 as minutes
from {{{{ ref('{up.dbt_model}') }}}}
where play_date >= '{{{{ var("report_start") }}}}'
"""
    upname = up.produces.name
    lin = lineage(upname, account_id="account_id", play_date="play_date", n_plays="n_plays",
                  minutes="total_secs")
    relation = dbt_relation(alias or model, "reporting")
    return Draft(f"{model}.sql", sql_block(text),
                 touch(upname, "account_id", "play_date", "n_plays", "total_secs"),
                 variant="alias" if alias else "folder_schema",
                 produces=Produced(relation, "rpt", lin), kind="dbt_model",
                 folder="models/reporting", dbt_model=model)


def wh_view_top(s: Slot) -> Draft:
    """A warehouse view on a level-2 warehouse view (level 3)."""
    up = s.pick("rollup").produces.name
    name = f"{VIEW_SCHEMA}.v_top_countries_{s.tag}"
    comment, owner = [owned("team-exec", 1), unowned(None)][s.variant(2)]
    text = f"""
SELECT country, hours
FROM {up}
WHERE n_plays > {s.rng.randint(5, 50)}
ORDER BY hours DESC
LIMIT 5
"""
    lin = lineage(up, country="country", hours="hours")
    return Draft(None, sql_block(text), touch(up, "country", "hours", "n_plays"),
                 variant="commented" if comment else "no_comment",
                 produces=Produced(name, "top", lin), kind="view", view_owner=owner,
                 comment=comment)


def mart_reader(s: Slot) -> Draft:
    """Reads a dbt mart: a dbt analysis rendered with ref(), or a plain query elsewhere."""
    up = s.pick("fct")
    if s.location == DBT_REPO:
        src, variant, folder = f"{{{{ ref('{up.dbt_model}') }}}}", "dbt_analysis", "analyses"
    else:
        src, variant, folder = up.produces.name, "plain", None
    text = f"""
select play_date, sum(n_plays) as plays, count(distinct account_id) as listeners
from {src}
group by play_date
order by play_date
"""
    return Draft(f"daily_listeners_{s.tag}.sql", sql_block(text),
                 touch(up.produces.name, "play_date", "n_plays", "account_id"),
                 variant=variant, folder=folder)


# -- not impacted --------------------------------------------------------------------

def staging_decoy(s: Slot) -> Draft:
    """Reads ``staging.plays``: same table name, other schema, not impacted."""
    # The comment names the source: only unparseable files are judged by their text.
    text = """
-- Checks the nightly load of the staging copy of analytics.plays
SELECT device, count(*) AS n_rows, max(loaded_at) AS last_load
FROM staging.plays
GROUP BY device
"""
    return Draft(f"staging_check_{s.tag}.sql", sql_block(text),
                 touch("staging.plays", "device", "loaded_at"), variant="decoy")


def unrelated(s: Slot) -> Draft:
    """Reads other tables: a warehouse view, a script, a dbt model, a reader of the view."""
    if s.location == WAREHOUSE:
        name = f"{VIEW_SCHEMA}.v_genre_catalog_{s.tag}"
        text = ("SELECT t.genre, count(*) AS n_tracks, count(DISTINCT t.artist_id) AS n_artists\n"
                "FROM analytics.tracks AS t\nGROUP BY t.genre")
        lin = lineage(TRACKS, genre="genre", n_tracks=None, n_artists="artist_id")
        return Draft(None, sql_block(text), touch(TRACKS, "genre", "artist_id"), variant="view",
                     produces=Produced(name, "catalog", lin), kind="view",
                     view_owner=Owner("team-catalog", 3, None), comment="owner=team-catalog tier=3")
    if s.location == DBT_REPO:
        model = f"stg_users_{s.tag}"
        text = "select user_id, country, plan, signup_at\nfrom {{ source('analytics', 'users') }}"
        lin = lineage("analytics.users", **{c: c for c in ("user_id", "country", "plan",
                                                           "signup_at")})
        return Draft(f"{model}.sql", sql_block(text),
                     touch("analytics.users", "user_id", "country", "plan", "signup_at"),
                     variant="dbt_model", kind="dbt_model", folder="models/staging",
                     produces=Produced(dbt_relation(model), "stg_users", lin), dbt_model=model)
    if s.location == "growth-analytics" and s.pools.get("catalog"):
        up = s.pick("catalog").produces.name
        text = f"SELECT genre, n_tracks\nFROM {up}\nWHERE n_artists > 3"
        return Draft(f"genre_catalog_{s.tag}.sql", sql_block(text),
                     touch(up, "genre", "n_tracks", "n_artists"), variant="reads_view")
    text = s.choice([
        "SELECT a.name, count(*) AS n_tracks\nFROM analytics.artists AS a\n"
        "JOIN analytics.tracks AS t ON t.artist_id = a.artist_id\nGROUP BY a.name\n"
        "ORDER BY n_tracks DESC\nLIMIT 20",
        "SELECT plan, sum(price_cents) / 100.0 AS revenue\nFROM analytics.subscriptions\n"
        "WHERE ended_at IS NULL\nGROUP BY plan",
    ])
    reads = (touch("analytics.artists", "artist_id", "name") | touch(TRACKS, "artist_id")
             if "artists" in text else touch("analytics.subscriptions", "plan", "price_cents",
                                             "ended_at"))
    return Draft(f"catalog_stats_{s.tag}.sql", sql_block(text), reads, variant="script")


def unparseable_mention(s: Slot) -> Draft:
    """Does not parse and names analytics.plays: listed, escalate, columns []."""
    text = s.choice([
        "-- WIP: weekly churn check, does not run yet\nSELECT user_id, count(*) AS n_plays\n"
        "FROM analytics.plays\nWHERE played_at >=\nGROUP BY user_id",
        "-- copied from the old BI tool\nSELECT device, count(*\nFROM analytics.plays\n"
        "GROUP BY device",
    ])
    return Draft(f"broken_churn_{s.tag}.sql", sql_block(text), {}, variant="mentions",
                 parses=False, mentions_source=True)


def unparseable_other(s: Slot) -> Draft:
    """Does not parse and names nothing derived from the source: unaffected."""
    text = s.choice([
        "-- Half-written: artists without tracks\nSELECT a.name\nFROM analytics.artists AS a\n"
        "WHERE a.artist_id NOT IN (SELECT artist_id FROM analytics.tracks",
        "SELECT genre, count(* AS n_tracks\nFROM analytics.tracks\nGROUP BY genre",
    ])
    return Draft(f"broken_catalog_{s.tag}.sql", sql_block(text), {}, variant="other",
                 parses=False)


READER_FAMILIES = (
    Family("clean_reader", "reads a repo view: aggregate, *, count(*), join", clean_reader,
           DUCK_REPOS),
    Family("flagged_reader_legacy", "reads legacy_flag through a view: escalate",
           flagged_reader_legacy, DUCK_REPOS),
    Family("flagged_reader_plain", "reads the legacy view without legacy_flag: verify",
           flagged_reader_plain, DUCK_REPOS),
    Family("daily_reader", "reads an aggregated view", daily_reader, DUCK_REPOS),
    Family("totals_reader", "reads a CTAS table", totals_reader, DUCK_REPOS),
    Family("dbt_report", "dbt model on a mart, +schema by folder, alias; level 3", dbt_report,
           DBT),
    Family("wh_view_top", "warehouse view on a level-2 view; level 3", wh_view_top, (WAREHOUSE,)),
    Family("mart_reader", "dbt analysis / plain query on a dbt mart; level 3", mart_reader,
           (DBT_REPO, "growth-analytics")),
)
UNAFFECTED_FAMILIES = (
    Family("staging_decoy", "staging.plays is another dataset", staging_decoy, DUCK_REPOS),
    Family("unrelated", "other tables; unaffected view, dbt model and their readers", unrelated,
           (WAREHOUSE, "legacy-scripts", DBT_REPO, "growth-analytics")),
    Family("unparseable_mention", "unparseable, mentions the source: escalate",
           unparseable_mention, ("legacy-scripts", "sandbox")),
    Family("unparseable_other", "unparseable, mentions nothing impacted: unaffected",
           unparseable_other, ("sandbox", "legacy-scripts")),
)
# Families whose first occurrence must be at their first location (the others rotate).
FIXED_ROTATION = frozenset({"mart_reader", "unrelated"})
