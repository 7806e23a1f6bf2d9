"""Agents rewrite one consumer each: the deterministic rule agent first, an optional
LLM agent for what rules cannot express; both pass the same verification gate."""
