"""One module per screen of pixl-tui."""
