"""Formatting only: numbers, tables, the JSON envelope and plots (format), and the text of
the compare, run and replay records (compare, run, replay).  Nothing here measures."""
