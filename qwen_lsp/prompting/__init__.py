"""Prompt templates (the files in `prompts/`) rendered for the engine."""
