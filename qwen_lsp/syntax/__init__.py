"""Syntax context from tree-sitter: open documents, the definitions code depends on, syntax errors."""
