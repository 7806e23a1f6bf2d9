"""Campaign values that Skein hands to another library later (DuckDB's memory limit,
pydantic-ai's model name, sampling columns), checked when the file is loaded, so that
``skein validate`` refuses exactly what a run would refuse, with the file's line.

Each check raises ``ValueError`` with the message the campaign file's error shows (pydantic
turns it into ``file:line: field: message``).
"""

from __future__ import annotations

import re

# DuckDB's memory-limit grammar is wider (``-1`` means "no limit", ``50%``, ``kilobytes``);
# the campaign takes the subset below, whose every value DuckDB reads as the same size.
MEMORY_SIZE = re.compile(r"^\s*(\d{1,12}(?:\.\d{1,6})?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)\s*$",
                         re.IGNORECASE)
MEMORY_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
                "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
# A sandbox loads samples and runs one query: below this DuckDB fails on anything.
MIN_SANDBOX_MEMORY = 16 * 2**20
MAX_SANDBOX_MEMORY = 2**50  # 1 PiB: past any machine, and inside DuckDB's own range


def sandbox_memory(value: str) -> str:
    """``simulation.memory_limit``: a size DuckDB reads, between 16 MiB and 1 PiB.

    >>> sandbox_memory("1GB"), sandbox_memory("512 MiB")
    ('1GB', '512 MiB')
    >>> sandbox_memory("-1GB")
    Traceback (most recent call last):
    ValueError: '-1GB' is not a memory size: a number and a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. `1GB` or `512MiB`
    >>> sandbox_memory("1MB")
    Traceback (most recent call last):
    ValueError: '1MB' is below 16 MiB: too little for a sandbox to load its samples
    """
    match = MEMORY_SIZE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a memory size: a number and a unit (B, KB, MB, GB, "
                         "TB, KiB, MiB, GiB, TiB), e.g. `1GB` or `512MiB`")
    size = float(match.group(1)) * MEMORY_UNITS[match.group(2).lower()]
    if size < MIN_SANDBOX_MEMORY:
        raise ValueError(f"{value!r} is below 16 MiB: too little for a sandbox to load its samples")
    if size > MAX_SANDBOX_MEMORY:
        raise ValueError(f"{value!r} is more than 1 PiB")
    return value


def model_name(value: str) -> str:
    """``agents.llm.model``: a name pydantic-ai can build a model from (``test``, or
    ``provider:model`` with a provider it knows), asked of pydantic-ai itself without building
    the model. Whether the provider's package and key are there is the environment's business:
    ``skein.pipeline.llm_agent`` says so with this field's line (``skein validate`` and
    ``skein plan`` both call it; in Airflow a connection gives the model instead).

    >>> model_name("test")
    'test'
    >>> model_name("gpt-4.1")
    Traceback (most recent call last):
    ValueError: 'gpt-4.1' is not a pydantic-ai model name: write `provider:model`, e.g. `openai:gpt-4.1`
    >>> model_name("nosuch:x")
    Traceback (most recent call last):
    ValueError: 'nosuch:x': unknown model provider 'nosuch'
    """
    if value == "test":
        return value
    from pydantic_ai.models import parse_model_id
    from pydantic_ai.providers import infer_provider_class

    provider, name = parse_model_id(value)
    if not provider or not name.strip():
        raise ValueError(f"{value!r} is not a pydantic-ai model name: write `provider:model`, "
                         "e.g. `openai:gpt-4.1`")
    try:
        infer_provider_class(provider)
    except ValueError:
        raise ValueError(f"{value!r}: unknown model provider {provider!r}") from None
    except ImportError:  # a known provider whose package is not installed here
        pass
    return value


def sample_key_columns(keys: dict[str, list[str]]) -> dict[str, list[str]]:
    """``simulation.sample_keys``: each column a name (the warehouse then checks it exists).

    >>> sample_key_columns({"analytics.plays": ["user_id"]})
    {'analytics.plays': ['user_id']}
    >>> sample_key_columns({"analytics.plays": [" "]})
    Traceback (most recent call last):
    ValueError: analytics.plays: ' ' is not a column name
    """
    for dataset, columns in keys.items():
        for column in columns:
            if not column.strip() or not column.isprintable():
                raise ValueError(f"{dataset}: {column!r} is not a column name")
    return keys
