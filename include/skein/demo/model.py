"""The demo fleet's vocabulary: consumers as declared by hand, and the repositories they live in.

Everything the ground truth needs is declared here or by the templates, never derived
by parsing SQL: the fleet is the independent oracle discovery is tested against.

>>> lineage("analytics.plays", account="user_id", n_plays=None)["account"]
frozenset({('analytics.plays', 'user_id')})
>>> lineage("analytics.plays", n_plays=None)["n_plays"]
frozenset()
>>> REPOS["legacy-scripts"].owner_of("scripts/a.sql")
Owner(owner='team-legacy', tier=None, dialect=None)
>>> REPOS["finance-reporting"].owner_of("treasury/q.sql").owner
'team-treasury'
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Mapping

SOURCE = "analytics.plays"
TARGET = "analytics_v2.plays"
CAMPAIGN = "plays-v2"
# The campaign's ``consumers[].dialect`` for repositories, and the warehouse's own
# dialect for views: files without a ``skein/dialect`` annotation fall back to it.
DEFAULT_DIALECT = "duckdb"
DROPPED = frozenset({"legacy_flag"})

# Base tables of the warehouse and their columns, in table order. Templates may only
# declare touching columns listed here (a test checks), so a typo cannot slip through.
BASE_COLUMNS: dict[str, tuple[str, ...]] = {
    "analytics.plays": ("play_id", "user_id", "track_id", "played_at", "ms_played", "country",
                        "device", "legacy_flag"),
    "analytics.users": ("user_id", "display_name", "country", "signup_at", "plan", "birth_year"),
    "analytics.artists": ("artist_id", "name", "country", "formed_year"),
    "analytics.tracks": ("track_id", "artist_id", "title", "duration_ms", "genre", "released_on",
                         "explicit"),
    "analytics.playlists": ("playlist_id", "owner_user_id", "name", "created_at", "is_public",
                            "n_tracks"),
    "analytics.subscriptions": ("subscription_id", "user_id", "plan", "started_at", "ended_at",
                                "price_cents"),
    "staging.plays": ("play_id", "user_id", "track_id", "played_at", "ms_played", "country",
                      "device", "legacy_flag", "loaded_at"),
}
PLAYS_COLUMNS = BASE_COLUMNS[SOURCE]

COUNTRIES = ("AR", "AU", "BR", "CA", "DE", "ES", "FR", "GB", "IN", "JP", "MX", "NL", "NO", "SE",
             "US")
DEVICES = ("mobile", "desktop", "web", "tv", "tablet", "car", "speaker")
PLANS = ("free", "premium", "family", "student")
GENRES = ("pop", "rock", "jazz", "hiphop", "electronic", "classical", "folk", "metal", "latin",
          "ambient")

# Where dbt writes: profiles.yml target schema, and the folder-level ``+schema`` of
# dbt_project.yml (dbt's default generate_schema_name gives ``<target>_<custom>``).
DBT_REPO = "music-dbt"
DBT_TARGET_SCHEMA = "analytics"
DBT_FOLDER_SCHEMA = {"models/reporting": "reporting"}


def dbt_relation(name: str, custom_schema: str | None = None) -> str:
    """The relation dbt builds for a model: ``<target>[_<custom>].<alias or name>``.

    >>> dbt_relation("stg_plays_0001"), dbt_relation("fct", "marts")
    ('analytics.stg_plays_0001', 'analytics_marts.fct')
    """
    schema = f"{DBT_TARGET_SCHEMA}_{custom_schema}" if custom_schema else DBT_TARGET_SCHEMA
    return f"{schema}.{name}"


@dataclass(frozen=True)
class Owner:
    """Who answers for a consumer, as the ground truth states it."""

    owner: str
    tier: int | None
    dialect: str | None  # None: the campaign's consumers[].dialect applies


@dataclass(frozen=True)
class Repo:
    """A consumer repository: its ownership metadata and where its files go.

    ``catalog_info`` maps a folder ('' for the root) to the Backstage component written
    there; ``codeowners`` is the team of the ``*`` line of CODEOWNERS.
    """

    name: str
    catalog_info: Mapping[str, Owner] = field(default_factory=dict)
    codeowners: str | None = None
    schema: str | None = None  # where its CREATE VIEW / CTAS land in the warehouse
    leaf_folder: str = ""      # folder of plain queries
    view_folder: str = ""      # folder of deployable views and tables
    lifecycle: str = "production"

    def owner_of(self, path: str) -> Owner:
        """The nearest catalog-info above ``path``, else CODEOWNERS ``*``, else unowned."""
        folders = [f for f in self.catalog_info if f == "" or path.startswith(f + "/")]
        if folders:
            return self.catalog_info[max(folders, key=len)]
        if self.codeowners:
            return Owner(self.codeowners, None, None)
        return Owner("unowned", None, None)


REPOS: dict[str, Repo] = {r.name: r for r in (
    Repo("growth-analytics", {"": Owner("team-growth", 2, None)}, schema="growth",
         leaf_folder="queries", view_folder="views"),
    # Both components state the dialect, so it does not matter whether the nearer one
    # is read alone or merged with the root one.
    Repo("finance-reporting", {"": Owner("team-finance", 1, "snowflake"),
                               "treasury": Owner("team-treasury", 2, "snowflake")},
         leaf_folder="reports"),
    Repo("marketing-bq", {"": Owner("team-marketing", 3, "bigquery")}, leaf_folder="queries"),
    Repo(DBT_REPO, {"": Owner("team-data-eng", 2, None)}, leaf_folder="analyses",
         view_folder="models"),
    Repo("legacy-scripts", codeowners="team-legacy", schema="legacy", leaf_folder="scripts",
         view_folder="scripts/deploy", lifecycle="deprecated"),
    Repo("sandbox", schema="sandbox", leaf_folder="scratch", view_folder="scratch"),
)}
# Repositories plain duckdb templates rotate through.
DUCK_REPOS = ("growth-analytics", "legacy-scripts", "sandbox")
WAREHOUSE = "warehouse"  # the location of warehouse-only views
VIEW_SCHEMA = "analytics_views"

Lineage = Mapping[str, frozenset[tuple[str, str]]]


def lineage(dataset: str, **columns: str | tuple[str, ...] | None) -> dict[str, frozenset]:
    """Value lineage of output columns that each come from columns of one input dataset."""
    out = {}
    for name, cols in columns.items():
        cols = () if cols is None else (cols,) if isinstance(cols, str) else cols
        out[name] = frozenset((dataset, c) for c in cols)
    return out


@dataclass(frozen=True)
class Produced:
    """A dataset a consumer creates, with each output column's value lineage."""

    name: str
    shape: str            # which readers may use it (templates pick upstreams by shape)
    lineage: Lineage
    materialized: str = "view"  # view | table


@dataclass
class Draft:
    """What a template returns: the consumer's text and what it reads, declared by hand."""

    filename: str | None       # file name (None for warehouse views)
    text: str                  # file contents, or the SELECT body of a warehouse view
    reads: dict[str, frozenset[str]]  # dataset -> columns of it the consumer touches
    variant: str
    produces: Produced | None = None
    kind: str = "sql"          # sql | dbt_model | view
    folder: str | None = None  # overrides the repository's default folder
    parses: bool = True
    mentions_source: bool = False  # for unparseable consumers: the text names the source
    view_owner: Owner | None = None  # warehouse views: what the comment states
    comment: str | None = None
    deploy: str | None = None  # duckdb SQL that creates ``produces``, when not the text itself
    dbt_model: str | None = None   # dbt model name (what ``ref`` takes)


@dataclass
class ConsumerSpec:
    """One consumer of the fleet, placed, with everything the ground truth states."""

    id: str
    index: int
    family: str
    variant: str
    kind: str
    repo: str | None
    path: str | None
    text: str
    dialect: str
    owner: str
    tier: int | None
    reads: dict[str, frozenset[str]]
    produces: Produced | None
    parses: bool
    mentions_source: bool
    comment: str | None
    rendered: str | None  # duckdb SQL equivalent of ``text`` (dbt rendered, views' body)
    deploy: str | None    # duckdb SQL the build runs to create ``produces``
    dbt_model: str | None


@dataclass
class Slot:
    """Where and with which randomness a template fills one consumer slot."""

    index: int
    occurrence: int           # how many consumers of this family came before
    rng: random.Random
    location: str             # a repository name, or WAREHOUSE
    pools: dict[str, list[ConsumerSpec]]  # producers so far, by shape

    @property
    def tag(self) -> str:
        """Zero-padded index that makes names unique across the fleet."""
        return f"{self.index:04d}"

    @property
    def repo(self) -> Repo | None:
        """The repository metadata of this slot's location (None for the warehouse)."""
        return REPOS.get(self.location)

    def pick(self, shape: str) -> ConsumerSpec:
        """A producer of ``shape`` made earlier (so it sits at a lower level)."""
        pool = self.pools.get(shape)
        if not pool:
            raise LookupError(f"no producer of shape {shape!r} before consumer {self.index}")
        return self.rng.choice(pool)

    def choice(self, options):
        """A deterministic pick from ``options``."""
        return self.rng.choice(list(options))

    def variant(self, n: int) -> int:
        """Which of ``n`` variants to use: rotate so repeats show every variant."""
        return self.occurrence % n


@dataclass(frozen=True)
class Family:
    """A template family: one kind of consumer, repeated with varied parameters."""

    name: str
    behaviour: str           # what discovery must get right on it
    build: Callable[[Slot], Draft]
    locations: tuple[str, ...]


def touch(dataset: str, *columns: str) -> dict[str, frozenset[str]]:
    """A Draft's ``reads`` entry: the columns of ``dataset`` a consumer touches.

    >>> r = touch("analytics.plays", "user_id", "country") | touch("analytics.users")
    >>> {name: sorted(cols) for name, cols in r.items()}
    {'analytics.plays': ['country', 'user_id'], 'analytics.users': []}
    """
    return {dataset: frozenset(columns)}


def sql_block(text: str) -> str:
    """Normalise a template's SQL: no leading blank line, one trailing newline."""
    return text.strip("\n") + "\n"
