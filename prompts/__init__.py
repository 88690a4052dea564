"""Prompt files (package data): the rewrite system prompt, its few-shot examples and the turn template."""
