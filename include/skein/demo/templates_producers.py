"""Template families that produce datasets: views, tables and dbt models built on plays.

Each declares, by hand, the value lineage of every output column (the input columns its
value is computed from, filters excluded) next to the SQL. Levels: the producers on
plays are 1; the dbt marts and the warehouse rollup read a level-1 product, so are 2.

>>> import random
>>> from skein.demo.model import Slot
>>> d = repo_view_clean(Slot(7, 0, random.Random(1), "sandbox", {}))
>>> d.produces.name, sorted(d.produces.lineage["account"])
('sandbox.v_plays_clean_0007', [('analytics.plays', 'user_id')])
"""

from __future__ import annotations

from skein.demo import dbt_project
from skein.demo.model import (COUNTRIES, DBT_REPO, DEVICES, DUCK_REPOS, SOURCE, VIEW_SCHEMA,
                              WAREHOUSE, Draft, Family, Owner, Produced, Slot, dbt_relation,
                              lineage, sql_block, touch)

TRACKS = "analytics.tracks"
CLEAN_COLUMNS = ("play_id", "user_id", "track_id", "played_at", "ms_played", "country", "device")


def owned(team: str, tier: int) -> tuple[str, Owner]:
    """A view comment in the form discovery reads, and the owner it states."""
    return f"owner={team} tier={tier}", Owner(team, tier, None)


def unowned(comment: str | None) -> tuple[str | None, Owner]:
    """No comment, or free text without ``owner=``: the view is unowned."""
    return comment, Owner("unowned", None, None)


# -- level 1 producers ---------------------------------------------------------------

def repo_view_clean(s: Slot) -> Draft:
    """A repository view renaming and converting plays columns, row by row."""
    name = f"{s.repo.schema}.v_plays_clean_{s.tag}"
    create = "CREATE OR REPLACE VIEW" if s.variant(2) == 0 else "CREATE VIEW"
    text = f"""
{create} {name} AS
SELECT
    p.play_id,
    p.user_id AS account,
    p.track_id,
    CAST(p.played_at AS DATE) AS play_date,
    p.ms_played / 1000.0 AS secs,
    p.country,
    p.device
FROM analytics.plays AS p
WHERE p.ms_played >= {s.rng.randrange(0, 60) * 1000}
"""
    lin = lineage(SOURCE, play_id="play_id", account="user_id", track_id="track_id",
                  play_date="played_at", secs="ms_played", country="country", device="device")
    return Draft(f"v_plays_clean_{s.tag}.sql", sql_block(text), touch(SOURCE, *CLEAN_COLUMNS),
                 variant=create.lower().replace(" ", "_"),
                 produces=Produced(name, "clean", lin), folder=s.repo.view_folder)


def repo_view_user_daily(s: Slot) -> Draft:
    """An aggregated repository view; an optional filter column is touched, not lineage."""
    name = f"{s.repo.schema}.v_user_daily_{s.tag}"
    dev = s.choice(DEVICES) if s.rng.random() < 0.5 else None
    where = f"\nWHERE device = '{dev}'" if dev else ""
    text = f"""
CREATE VIEW {name} AS
SELECT user_id,
       CAST(played_at AS DATE) AS play_date,
       count(*) AS n_plays,
       sum(ms_played) AS total_ms
FROM analytics.plays{where}
GROUP BY 1, 2
"""
    cols = ("user_id", "played_at", "ms_played") + (("device",) if dev else ())
    lin = lineage(SOURCE, user_id="user_id", play_date="played_at", n_plays=None,
                  total_ms="ms_played")
    return Draft(f"v_user_daily_{s.tag}.sql", sql_block(text), touch(SOURCE, *cols),
                 variant="filtered" if dev else "plain",
                 produces=Produced(name, "user_daily", lin), folder=s.repo.view_folder)


def repo_view_flagged(s: Slot) -> Draft:
    """A view exposing legacy_flag: escalate itself; its readers depend on what they read."""
    name = f"{s.repo.schema}.v_plays_flagged_{s.tag}"
    cc = s.choice(COUNTRIES) if s.rng.random() < 0.5 else None
    where = f"\nWHERE country <> '{cc}'" if cc else ""
    text = f"""
CREATE OR REPLACE VIEW {name} AS
SELECT play_id, user_id, track_id, played_at, legacy_flag
FROM analytics.plays{where}
"""
    cols = ("play_id", "user_id", "track_id", "played_at", "legacy_flag")
    lin = lineage(SOURCE, **{c: c for c in cols})
    return Draft(f"v_plays_flagged_{s.tag}.sql", sql_block(text),
                 touch(SOURCE, *cols, *(("country",) if cc else ())),
                 variant="filtered" if cc else "plain",
                 produces=Produced(name, "flagged", lin), folder=s.repo.view_folder)


def legacy_ctas(s: Slot) -> Draft:
    """CREATE TABLE ... AS, or INSERT INTO an existing table: both produce a table."""
    if s.variant(2) == 0:
        name = f"legacy.country_totals_{s.tag}"
        text = f"""
CREATE TABLE {name} AS
SELECT country, count(*) AS n_plays, sum(ms_played) AS total_ms
FROM analytics.plays
WHERE played_at < TIMESTAMP '2024-{s.rng.randint(3, 12):02d}-01'
GROUP BY country
"""
        lin = lineage(SOURCE, country="country", n_plays=None, total_ms="ms_played")
        return Draft(f"country_totals_{s.tag}.sql", sql_block(text),
                     touch(SOURCE, "country", "ms_played", "played_at"), variant="ctas",
                     produces=Produced(name, "country_totals", lin, "table"),
                     folder=s.repo.view_folder)
    name = f"legacy.device_log_{s.tag}"
    text = f"""
INSERT INTO {name} (device, n_plays, total_ms)
SELECT device, count(*), sum(ms_played)
FROM analytics.plays
GROUP BY device
"""
    # As deployed: the table exists before the script appends to it.
    deploy = (f"CREATE TABLE {name} (device VARCHAR, n_plays BIGINT, total_ms HUGEINT);\n"
              + sql_block(text))
    lin = lineage(SOURCE, device="device", n_plays=None, total_ms="ms_played")
    return Draft(f"device_log_{s.tag}.sql", sql_block(text), touch(SOURCE, "device", "ms_played"),
                 variant="insert", produces=Produced(name, "device_log", lin, "table"),
                 folder=s.repo.view_folder, deploy=deploy)


def dbt_staging(s: Slot) -> Draft:
    """dbt staging model: source(), a macro, var(), is_incremental(); or identifier+alias."""
    lin = lineage(SOURCE, play_id="play_id", user_id="user_id", track_id="track_id",
                  played_at="played_at", secs="ms_played", country="country", device="device")
    if s.variant(2) == 0:
        model = f"stg_plays_{s.tag}"
        text = """
{{ config(materialized='incremental', unique_key='play_id') }}

-- One row per play long enough to count as a stream.
select
    play_id,
    user_id,
    track_id,
    played_at,
    {{ ms_to_seconds('ms_played') }} as secs,
    country,
    device
from {{ source('analytics', 'plays') }}
where ms_played >= {{ var('min_ms_played', 0) }}
{% if is_incremental() %}
  and played_at > (select max(played_at) from {{ this }})
{% endif %}
"""
        relation, variant, materialized = dbt_relation(model), "incremental", "table"
    else:
        model, alias = f"stg_play_events_{s.tag}", f"play_events_clean_{s.tag}"
        text = f"""
{{{{ config(materialized='view', alias='{alias}') }}}}

select play_id, user_id, track_id, played_at,
       {{{{ ms_to_seconds('ms_played') }}}} as secs, country, device
from {{{{ source('music_raw', 'play_events') }}}}
where device <> '{s.choice(DEVICES)}'
  and played_at >= '{{{{ env_var("PLAYS_SINCE", "2024-01-01") }}}}'
"""
        relation, variant, materialized = dbt_relation(alias), "identifier_alias", "view"
    return Draft(f"{model}.sql", sql_block(text), touch(SOURCE, *CLEAN_COLUMNS), variant=variant,
                 produces=Produced(relation, "stg", lin, materialized), kind="dbt_model",
                 folder="models/staging", dbt_model=model)


def wh_view_country_device(s: Slot) -> Draft:
    """A warehouse-only view on plays; owner and tier from its comment when well-formed."""
    name = f"{VIEW_SCHEMA}.v_country_device_{s.tag}"
    comment, owner = [
        owned("team-bi", 2), unowned(None), owned("team-insights", 1),
        unowned("Country x device rollup for the weekly dashboard")][s.variant(4)]
    text = """
SELECT country, device, count(*) AS n_plays, sum(ms_played) AS total_ms
FROM analytics.plays
GROUP BY country, device
"""
    lin = lineage(SOURCE, country="country", device="device", n_plays=None, total_ms="ms_played")
    return Draft(None, sql_block(text), touch(SOURCE, "country", "device", "ms_played"),
                 variant="commented" if owner.owner != "unowned" else "unowned",
                 produces=Produced(name, "country_device", lin), kind="view",
                 view_owner=owner, comment=comment)


# -- level 2 producers ---------------------------------------------------------------

def dbt_mart(s: Slot) -> Draft:
    """dbt mart: config(schema='marts'), ref() to a staging model, a star inside a CTE."""
    up = s.pick("stg")
    model = f"fct_user_daily_{s.tag}"
    # dbt's two-argument ref('package', 'model') names the same model.
    ref = f"'{dbt_project.PROJECT}', '{up.dbt_model}'" if s.variant(2) else f"'{up.dbt_model}'"
    dev = s.choice(DEVICES) if s.rng.random() < 0.5 else None
    where = f"\nwhere device <> '{dev}'" if dev else ""
    text = f"""
{{{{ config(materialized='view', schema='marts') }}}}

with plays as (
    select * from {{{{ ref({ref}) }}}}
)

select
    user_id as account_id,
    cast(played_at as date) as play_date,
    count(*) as n_plays,
    sum(secs) as total_secs
from plays{where}
group by 1, 2
"""
    upname = up.produces.name
    lin = lineage(upname, account_id="user_id", play_date="played_at", n_plays=None,
                  total_secs="secs")
    cols = ("user_id", "played_at", "secs") + (("device",) if dev else ())
    return Draft(f"{model}.sql", sql_block(text), touch(upname, *cols),
                 variant=("ref", "package_ref")[s.variant(2)] + ("_filtered" if dev else ""),
                 produces=Produced(dbt_relation(model, "marts"), "fct", lin), kind="dbt_model",
                 folder="models/marts", dbt_model=model)


def wh_view_rollup(s: Slot) -> Draft:
    """A warehouse view on a warehouse view (level 2); its filter column is touched."""
    up = s.pick("country_device").produces.name
    name = f"{VIEW_SCHEMA}.v_country_rollup_{s.tag}"
    comment, owner = [unowned("Rollup for the exec dashboard"),
                      owned("team-bi", 1)][s.variant(2)]
    text = f"""
SELECT country, sum(n_plays) AS n_plays, sum(total_ms) / 3600000.0 AS hours
FROM {up}
WHERE device <> '{s.choice(DEVICES)}'
GROUP BY country
"""
    lin = lineage(up, country="country", n_plays="n_plays", hours="total_ms")
    return Draft(None, sql_block(text), touch(up, "country", "n_plays", "total_ms", "device"),
                 variant="commented" if owner.owner != "unowned" else "free_text_comment",
                 produces=Produced(name, "rollup", lin), kind="view", view_owner=owner,
                 comment=comment)


DBT = (DBT_REPO,)
PRODUCER_FAMILIES = (
    Family("dbt_staging", "dbt source()/macro/var/is_incremental; identifier and alias",
           dbt_staging, DBT),
    Family("repo_view_clean", "repository CREATE [OR REPLACE] VIEW on plays", repo_view_clean,
           DUCK_REPOS),
    Family("repo_view_user_daily", "aggregated repository view", repo_view_user_daily,
           DUCK_REPOS),
    Family("repo_view_flagged", "view exposing legacy_flag (escalate)", repo_view_flagged,
           DUCK_REPOS),
    Family("legacy_ctas", "CREATE TABLE AS / INSERT INTO produce tables", legacy_ctas,
           ("legacy-scripts",)),
    Family("wh_view_country_device", "warehouse-only view on plays, owner from comment",
           wh_view_country_device, (WAREHOUSE,)),
    Family("dbt_mart", "dbt ref() chain, config(schema='marts'), level 2", dbt_mart, DBT),
    Family("wh_view_rollup", "warehouse view on a warehouse view, level 2", wh_view_rollup,
           (WAREHOUSE,)),
)
