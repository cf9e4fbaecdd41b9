"""Formatting only: text tables, the JSON envelope, plots (format)."""
