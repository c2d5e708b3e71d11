"""Widgets of pixl-tui, grouped by the feature they belong to."""
