"""Repo-level context: workspace index, symbol extraction and ranked retrieval."""
