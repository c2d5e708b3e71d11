"""A table of server data, one row per key, updated in place so that a live refresh
never flickers and the cursor stays on the row the operator chose."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from textual.widgets import DataTable


class LiveTable(DataTable):
    """`columns` are (column key, label) pairs; rows are given as cells in that order."""

    def __init__(self, columns: Sequence[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.column_spec = tuple(columns)

    def on_mount(self) -> None:
        for key, label in self.column_spec:
            self.add_column(label, key=key)

    def show_rows(self, rows: Mapping[str, Sequence[object]]) -> None:
        """Hold exactly `rows` (row key -> cells): rows that are gone are removed, rows
        still there are updated where they stand, new rows are added at the end."""
        for row_key in list(self.rows):
            if row_key.value not in rows:
                self.remove_row(row_key)
        for key, cells in rows.items():
            if key in self.rows:
                for (column, _label), value in zip(self.column_spec, cells):
                    self.update_cell(key, column, value, update_width=True)
            else:
                self.add_row(*cells, key=key)

    def highlighted_key(self) -> str | None:
        """The key of the row under the cursor; None when the table is empty."""
        if not self.row_count:
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
