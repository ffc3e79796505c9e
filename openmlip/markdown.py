"""Markdown tables: the one writer of the tables in openmlip's reports and cards."""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence


def markdown_table(headers: Optional[Sequence[object]], rows: Iterable[Sequence[object]],
                   align: Optional[str] = None) -> List[str]:
    """The lines of a Markdown table: the header row, the alignment row and one line per row, each cell written as
    an f-string writes it (``| a | b |``).

    ``headers``: the column headings; ``None`` for a table without any (Markdown needs a header row: it is left
    empty, ``| | |``, and the column count is taken from the first row).  ``align``: one letter per column,
    ``l`` (left, ``---``) or ``r`` (right, ``---:``); all left by default.
    """
    rows = [list(r) for r in rows]
    columns = len(headers) if headers is not None else len(rows[0]) if rows else len(align or "")
    align = align or "l" * columns
    if len(align) != columns or set(align) - {"l", "r"}:
        raise ValueError(f"align {align!r}: give one of 'l' or 'r' for each of the {columns} columns")
    head = _row(headers) if headers is not None else "|" + " |" * columns
    return [head, _row(["---:" if a == "r" else "---" for a in align]), *(_row(r) for r in rows)]


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(f"{c}" for c in cells) + " |"
