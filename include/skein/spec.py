"""The campaign file: one migration, validated with pydantic.

``load_campaign`` checks everything that can be checked from the file alone
(shape, ids, SQL expressions parse). ``skein.discovery`` checks the rest against
the warehouse's catalog (the source exists, mapped columns exist). Every problem
is reported as ``file:line: field: message``.

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> p = os.path.join(d, "c.yaml")
>>> _ = open(p, "w").write('''
... campaign: plays-v2
... title: Rename user_id
... owners: [data-platform]
... warehouse: duckdb:///wh.duckdb
... source: analytics.plays
... target: analytics_v2.plays
... columns:
...   user_id: account_id
... ''')
>>> c = load_campaign(p)
>>> c.campaign, c.columns, c.rollout.schedule
('plays-v2', {'user_id': 'account_id'}, '0 2 * * *')
>>> _ = open(p, "w").write("campaign: Plays_V2\\n")
>>> load_campaign(p)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
skein.errors.SpecErrors: ...c.yaml:1: campaign: 'Plays_V2' must be lowercase letters, digits and dashes...
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError,
                      field_validator, model_validator)

from skein.errors import SpecError, SpecErrors
from skein.spec_values import model_name, sample_key_columns, sandbox_memory
from skein.yamlspan import YamlDoc, load_yaml_file

CAMPAIGN_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
DATASET_NAME = re.compile(r"^[A-Za-z_][\w$]*(\.[A-Za-z_][\w$]*){0,2}$")
CRON_PRESETS = {"@once", "@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually"}
WAREHOUSE_SCHEMES = ("duckdb", "postgresql", "postgres")
# Kubernetes resource quantities (a subset: plain or decimal numbers, CPU in millicores or
# cores, memory with a binary or decimal suffix).
CPU_QUANTITY = re.compile(r"^(\d+(\.\d+)?|\d+m)$")
MEMORY_QUANTITY = re.compile(r"^(\d+(\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
MEMORY_FACTORS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                  "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
MIN_TASK_MEMORY = 256 * 2**20  # a task imports sqlglot, DuckDB and Great Expectations
EXECUTOR_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_dialect(value: str | None) -> str | None:
    if value is None:
        return None
    from sqlglot.dialects.dialect import Dialect

    try:
        Dialect.get_or_raise(value)
    except ValueError:
        raise ValueError(f"unknown SQL dialect {value!r}") from None
    return value


class ConsumerSource(_Strict):
    """Where to look for consumers: git repositories, or the warehouse's views."""

    repo: str | None = Field(None, description="Glob of git repositories, relative to the campaign file.")
    warehouse_views: bool = Field(False, description="Treat views defined in the warehouse as consumers.")
    dialect: str | None = Field(None, description="SQL dialect of files in these repositories "
                                "(a catalog-info.yaml `skein/dialect` annotation overrides it).")
    exclude: list[str] = Field(default_factory=list, description="Globs of paths inside the "
                               "repositories to skip, e.g. `archive/**`.")

    _dialect = field_validator("dialect")(classmethod(lambda cls, v: check_dialect(v)))

    @model_validator(mode="after")
    def _one_kind(self):
        if bool(self.repo) == bool(self.warehouse_views):
            raise ValueError("give exactly one of `repo: <glob>` or `warehouse_views: true`")
        return self


class Wave(_Strict):
    name: str = Field(description="Wave name, shown in the UI.")
    share: float = Field(gt=0, le=1, description="Cumulative share of consumers applied once "
                         "this wave is done (0 < share <= 1).")
    soak_minutes: float = Field(0, ge=0, le=7 * 24 * 60, description="Wait this long after the "
                                "wave is applied before monitoring it.")
    error_threshold: float | None = Field(None, ge=0, le=1, description="This wave's threshold "
                                          "(default: `rollout.error_threshold`).")


def _default_waves() -> list[Wave]:
    return [Wave(name="canary", share=0.1), Wave(name="everyone", share=1.0)]


class Rollout(_Strict):
    schedule: str | None = Field("0 2 * * *", description="Cron expression or preset for "
                                 "nightly runs; null for manual runs only.")
    approvers: list[str] = Field(default_factory=list, description="Airflow user ids allowed "
                                 "to approve the campaign.")
    error_threshold: float = Field(0.05, ge=0, le=1, description="Failed / applied ratio in a "
                                   "wave above which everything is rolled back.")
    waves: list[Wave] = Field(default_factory=_default_waves, min_length=1)
    approve_each_wave: bool = Field(False, description="Ask the approvers again before every wave "
                                    "after the first.")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None or value in CRON_PRESETS:
            return value
        if len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a 5-field cron expression or a preset "
                             f"({', '.join(sorted(CRON_PRESETS))})")
        return value

    @field_validator("waves")
    @classmethod
    def _waves_grow(cls, waves: list[Wave]) -> list[Wave]:
        shares = [w.share for w in waves]
        if shares != sorted(shares) or len(set(shares)) != len(shares):
            raise ValueError("wave shares must strictly increase")
        if shares[-1] != 1:
            raise ValueError("the last wave must have share 1.0 (every consumer)")
        if len({w.name for w in waves}) != len(waves):
            raise ValueError("wave names must be unique")
        return waves


class LLMAgentSettings(_Strict):
    enabled: bool = Field(False, description="Send what the rule agent escalates to an LLM agent.")
    model: str | None = Field(None, description="pydantic-ai model name, e.g. `openai:gpt-4.1` "
                              "(outside Airflow; the key comes from the provider's environment "
                              "variable). In Airflow the `conn_id` connection gives the model.")
    conn_id: str = Field("pydanticai_default", description="Airflow `pydanticai` connection.")
    attempts: int = Field(3, ge=1, le=10, description="Model answers tried per consumer.")

    _model = field_validator("model")(classmethod(lambda cls, v: v if v is None else model_name(v)))


class Expectation(_Strict):
    """One Great Expectations expectation, by its GX class name and arguments."""

    type: str = Field(description="GX expectation class, e.g. `ExpectColumnValuesToNotBeNull`.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Its arguments, e.g. "
                                   "`{column: user_id}`.")
    consumer: str | None = Field(None, description="Only for this consumer id or the dataset a "
                                 "consumer produces (default: every consumer whose output has the "
                                 "columns named).")


class SimulationSettings(_Strict):
    sample_rows: int = Field(100_000, ge=1, description="Datasets larger than this are sampled "
                             "(consistently, by a hash of `sample_keys`) before the dry run.")
    sample_keys: dict[str, list[str]] = Field(default_factory=dict, description="dataset -> "
                                              "columns to sample on, so joins keep their partners "
                                              "(e.g. every dataset on its user id).")
    rel_tol: float = Field(1e-9, ge=0, lt=1, description="Relative tolerance for floating point "
                           "values in the parity check.")
    timeout_s: float = Field(60, gt=0, description="Time limit per consumer query.")
    memory_limit: str = Field("1GB", description="DuckDB memory limit of each sandbox: a number "
                              "and a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), 16 MiB to 1 PiB.")
    expectations: list[Expectation] = Field(default_factory=list, description="Extra expectations "
                                            "every new output must meet.")
    dbt_build: bool = Field(True, description="Build each patched dbt model and its descendants "
                            "with dbt in a sandbox warehouse and run the project's tests on them; "
                            "a build or test the patch breaks refutes it (docs/simulation.md).")

    _memory = field_validator("memory_limit")(classmethod(lambda cls, v: sandbox_memory(v)))
    _keys = field_validator("sample_keys")(classmethod(lambda cls, v: sample_key_columns(v)))


class Resources(_Strict):
    """The campaign's quota for each of its tasks: CPU and memory, Kubernetes quantities.

    >>> Resources(cpu="500m", memory="1Gi").cpu
    '500m'
    >>> Resources(cpu="half", memory="1Gi")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for Resources
    cpu
      Value error, 'half' is not a CPU quantity: cores like `1` or `0.5`, or millicores like `500m` ...
    """

    cpu: str = Field(description="CPU of each task: cores (`1`, `0.5`) or millicores (`500m`).")
    memory: str = Field(description="Memory of each task: bytes with a suffix, e.g. `512Mi`, "
                        "`2Gi` (at least 256Mi).")

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value):
        text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not CPU_QUANTITY.match(text):
            raise ValueError(f"{value!r} is not a CPU quantity: cores like `1` or `0.5`, or "
                             "millicores like `500m`")
        if float(text.rstrip("m")) == 0:
            raise ValueError("must be more than 0")
        return text

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value):
        match = MEMORY_QUANTITY.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"{value!r} is not a memory quantity: a number with a suffix "
                             "(Ki, Mi, Gi, Ti, or k, M, G, T), e.g. `512Mi` or `2Gi`")
        if float(match.group(1)) * MEMORY_FACTORS[match.group(3)] < MIN_TASK_MEMORY:
            raise ValueError(f"{value!r} is below 256Mi: too little for a Skein task, which "
                             "loads sqlglot, DuckDB and Great Expectations")
        return value


class Fleet(_Strict):
    """How the campaign's tasks use the Airflow fleet (pools, queues, priorities, retries,
    executor and resources)."""

    pool: str = Field("skein_default", description="Airflow pool of the campaign's consumer "
                      "work (create it in `airflow_settings.yaml`).")
    queues: dict[str, str] = Field(default_factory=dict, description="Region -> Celery queue. "
                                   "Consumers whose `skein/region` annotation names a region are "
                                   "applied by that queue's workers; the others by the default queue.")
    tier_priority: dict[int, int] = Field(default_factory=dict, description="Tier -> Airflow "
                                          "`priority_weight` of the tasks applying that tier's "
                                          "consumers (other tiers: 1).")
    retries: int = Field(2, ge=0, le=10, description="Retries of every task (exponential backoff).")
    retry_delay_s: float = Field(30, gt=0, description="First retry delay; doubles each retry.")
    execution_timeout_minutes: float = Field(60, gt=0, description="Time limit of every task.")
    batch_size: int | None = Field(None, ge=1, description="Consumers per mapped task instance "
                                   "(default: at least 10 for agents and simulation, 50 for "
                                   "applying a wave, and more when needed so that a step never "
                                   "has more than 8 instances).")
    executor: str | None = Field(None, description="Airflow executor of the campaign's tasks when "
                                 "several are configured (e.g. `KubernetesExecutor` with "
                                 "`executor = CeleryExecutor,KubernetesExecutor`); default: the "
                                 "first configured executor.")
    resources: Resources | None = Field(None, description="The campaign's quota per task: under "
                                        "the KubernetesExecutor each task's pod requests and is "
                                        "limited to this CPU and memory.")

    @field_validator("executor")
    @classmethod
    def _executor(cls, value: str | None) -> str | None:
        if value is not None and not EXECUTOR_NAME.match(value):
            raise ValueError(f"{value!r} is not an executor name: an Airflow executor such as "
                             "`KubernetesExecutor` or `CeleryExecutor`, or a class path "
                             "`my_company.executors.MyExecutor`")
        return value


class Notifications(_Strict):
    """Where Skein says that an approval waits, a consumer is escalated, a campaign rolled back or
    finished (Airflow connections, e.g. from `airflow_settings.yaml`)."""

    slack_conn_id: str | None = Field(None, description="Slack incoming-webhook connection.")
    smtp_conn_id: str | None = Field(None, description="SMTP connection.")
    email_to: list[str] = Field(default_factory=list, description="Email recipients.")
    events: list[Literal["approval", "escalation", "rollback", "finished"]] = Field(
        default_factory=lambda: ["approval", "escalation", "rollback", "finished"],
        description="Which events notify.")


class Agents(_Strict):
    llm: LLMAgentSettings = Field(default_factory=LLMAgentSettings)


class Campaign(_Strict):
    """One migration: what changes, where consumers are, how it rolls out."""

    campaign: str = Field(description="Campaign id: lowercase letters, digits and dashes.")
    title: str = Field(min_length=1, description="One line shown in lists.")
    description: str | None = Field(None, description="Markdown for reviewers (DAG docs).")
    owners: list[str] = Field(min_length=1, description="Teams owning the campaign.")
    warehouse: str = Field(description="Where datasets live: `duckdb:///path` (relative to this "
                           "file) or `postgresql://user@host:port/db`.")
    dialect: str | None = Field(None, description="SQL dialect of the warehouse and of "
                                "`columns`/`forward`; defaults from the warehouse scheme.")
    source: str = Field(description="Dataset consumers read today: `schema.table`.")
    target: str = Field(description="Dataset consumers must read after the migration.")
    columns: dict[str, str | None] = Field(default_factory=dict, description="Old column -> SQL "
                                           "expression over the target's columns; null drops it.")
    forward: str | None = Field(None, description="SELECT building the target from the source, "
                                "used to simulate before the target exists.")
    consumers: list[ConsumerSource] = Field(
        default_factory=lambda: [ConsumerSource(warehouse_views=True)], min_length=1,
        description="Where to look for consumers; default: the warehouse's views.")
    rollout: Rollout = Field(default_factory=Rollout)
    agents: Agents = Field(default_factory=Agents, description="Which agents rewrite consumers.")
    simulation: SimulationSettings = Field(default_factory=SimulationSettings, description="How "
                                           "patches are dry-run on data before anything is applied.")
    fleet: Fleet = Field(default_factory=Fleet, description="Pools, queues, priorities, retries.")
    notifications: Notifications = Field(default_factory=Notifications, description="Slack and "
                                         "email notifications.")

    _path: Path | None = PrivateAttr(None)
    _lines: YamlDoc | None = PrivateAttr(None)

    @field_validator("campaign")
    @classmethod
    def _id(cls, value: str) -> str:
        if not CAMPAIGN_ID.match(value):
            raise ValueError(f"{value!r} must be lowercase letters, digits and dashes "
                             "(at most 64, not starting or ending with a dash)")
        return value

    @field_validator("warehouse")
    @classmethod
    def _warehouse(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in WAREHOUSE_SCHEMES:
            raise ValueError(f"{value!r}: use duckdb:///path/to/file.duckdb or "
                             "postgresql://user@host:port/database")
        return value

    @field_validator("source", "target")
    @classmethod
    def _dataset(cls, value: str) -> str:
        if not DATASET_NAME.match(value):
            raise ValueError(f"{value!r} is not a dataset name like schema.table")
        return value

    _dialect = field_validator("dialect")(classmethod(lambda cls, v: check_dialect(v)))

    @model_validator(mode="after")
    def _distinct(self):
        if self.source.lower() == self.target.lower():
            raise ValueError("source and target must differ")
        return self

    @property
    def path(self) -> Path | None:
        """The file this campaign was loaded from."""
        return self._path

    @property
    def sql_dialect(self) -> str:
        if self.dialect:
            return self.dialect
        return "postgres" if self.warehouse.startswith("postgres") else "duckdb"

    @property
    def base_dir(self) -> Path:
        return self._path.parent if self._path else Path.cwd()

    def line_of(self, *path: str | int) -> int | None:
        return self._lines.line_of(path) if self._lines else None

    def error(self, message: str, *path: str | int) -> SpecError:
        """A ``SpecError`` pointing at ``path`` inside this campaign's file."""
        return SpecError(message, file=str(self._path) if self._path else None,
                         line=self.line_of(*path), field=_dotted(path) or None)


def _dotted(path) -> str:
    """A field's path as errors print it; keys that are not printable text are quoted, so a
    key cannot break (or forge) the one-line ``file:line: field: message`` format.

    >>> print(_dotted(("rollout", "waves", 0, "share")), _dotted(("consumers", 0, "a\\nb")))
    rollout.waves[0].share consumers[0].'a\\nb'
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = str(part) if str(part).isprintable() else repr(str(part))
        out += f".{name}" if out else name
    return out


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign file; raise ``SpecErrors`` listing every problem."""
    try:
        doc = load_yaml_file(path)
    except SpecError as exc:  # one error type for callers, whatever the phase
        raise SpecErrors([exc]) from None
    if not isinstance(doc.data, dict):
        raise SpecErrors([SpecError("a campaign file must be a YAML mapping", file=doc.file, line=1)])
    try:
        campaign = Campaign.model_validate(doc.data)
    except ValidationError as exc:
        raise SpecErrors([_to_spec_error(err, doc) for err in exc.errors()]) from None
    campaign._path = Path(path).resolve()
    campaign._lines = doc
    from skein.spec_sql import sql_problems  # sqlglot: imported only once a file is read

    problems = list(sql_problems(campaign))
    if problems:
        raise SpecErrors(problems)
    return campaign


def _to_spec_error(err: dict[str, Any], doc: YamlDoc) -> SpecError:
    loc = tuple(err["loc"])
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if err["type"] == "extra_forbidden":
        message = "unknown field (check the spelling; see docs/campaign-spec.md)"
    elif err["type"] == "missing":
        message = "required field is missing"
    elif err["type"] == "invalid_key":  # `~: x`, `2.5: x`: YAML reads those keys as null, numbers
        message = "a key must be text: quote it"
    return SpecError(message, file=doc.file, line=doc.line_of(loc), field=_dotted(loc) or None)


def campaign_json_schema() -> dict[str, Any]:
    """JSON Schema of campaign files (``skein schema``)."""
    schema = Campaign.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Skein campaign"
    return schema
