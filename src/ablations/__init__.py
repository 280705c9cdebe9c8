"""Ablations that put the claims of an LLM interview handbook to the test."""
