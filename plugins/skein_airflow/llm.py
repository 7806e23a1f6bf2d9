"""The LLM agent's model, from an Airflow connection of type ``pydanticai``.

The common-ai provider's ``PydanticAIHook`` reads the connection (API key in the
password, optional base URL in the host, ``{"model": "openai:gpt-4.1"}`` in the extra,
optional ``fallback_conn_ids``) and builds the pydantic-ai model; the vendor types
(``pydanticai_azure``, ``_bedrock``, ``_vertex``) get their own hook through the same
call. Building the model opens no network connection: the first request does.

    from skein.agents.gate import default_gate
    from skein.agents.llm import LLMAgent
    from skein_airflow.llm import model_from_connection

    agent = LLMAgent(model_from_connection("skein_llm"), gate=default_gate(samples), attempts=3)

A connection for tests and demos needs no key: ``AIRFLOW_CONN_SKEIN_LLM='{"conn_type":
"pydanticai", "extra": {"model": "test"}}'`` gives pydantic-ai's offline ``TestModel``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic_ai.models import Model

DEFAULT_CONN_ID = "pydanticai_default"


def model_from_connection(conn_id: str = DEFAULT_CONN_ID, *, model_id: str | None = None) -> Model:
    """The pydantic-ai model configured by ``conn_id``; ``model_id`` overrides its Model field.

    Errors are the provider's own and name what to fix: a missing connection
    (``AirflowNotFoundException``), a connection that is not a ``pydanticai*`` type or has
    no model (``ValueError``); a provider whose package is not installed raises
    ``ImportError``, here prefixed with the connection and model.
    """
    from airflow.providers.common.ai.hooks.pydantic_ai import PydanticAIHook

    hook = PydanticAIHook.get_hook(conn_id, hook_params={"model_id": model_id} if model_id else None)
    try:
        return hook.get_conn()
    except ImportError as exc:
        model = model_id or hook.get_connection(conn_id).extra_dejson.get("model")
        raise ImportError(f"connection {conn_id!r} (model {model!r}): {exc}") from exc
