"""The overview says what holds the pipeline back, from the real raw server."""

from __future__ import annotations

import pytest
from textual.widgets import Static
from tui_helpers import wait_until

from tui.app import PixlApp

pytestmark = pytest.mark.stack


async def test_the_overview_shows_anons_backlog_raws_cache_and_anons_rate(raw_client, stack):
    app = PixlApp(raw_client, refresh_seconds=0.3)
    async with app.run_test(size=(160, 40)) as pilot:
        line = app.screen.query_one("#pipeline", Static)
        await wait_until(pilot, lambda: "Waiting for anon:" in str(line.render()), "the pipeline line")
        text = str(line.render())
    max_mb = stack.settings.raw_max_storage_mb
    assert f"/{max_mb} MB" in text
    assert f"of {max_mb // 2} MB" in text  # the hold limit: half the cache by default
    assert "instances/s" in text
    assert "⚠" not in text  # a healthy stack has no problem to show
