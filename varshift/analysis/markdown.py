"""Markdown tables: pandas' ``to_markdown`` with every cell kept in its column."""

from __future__ import annotations

import pandas as pd


def escape_cell(value: object) -> object:
    """A cell's text with its ``|`` escaped (a bare one would end the cell: panel labels such as
    "Dropout-(a) before BN | fashion_mnist" hold one)."""
    return value.replace("|", r"\|") if isinstance(value, str) else value


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a GitHub Markdown table, its text as written (no number parsing)."""
    escaped = frame.map(escape_cell).rename(columns=escape_cell)
    return escaped.to_markdown(index=False, disable_numparse=True)
