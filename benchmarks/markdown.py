"""Markdown tables for the benchmark reports (BENCHMARKS.md and benchmarks/results/*.md)."""
from typing import Iterable, List, Sequence


def row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(head: Sequence[str], rows: Iterable[Sequence[object]], align: str) -> List[str]:
    """A Markdown table; align holds one letter per column: "l" left, "r" right."""
    if len(align) != len(head):
        raise ValueError(f"align {align!r} has {len(align)} letters for {len(head)} columns")
    rule = "".join("---:|" if a == "r" else "---|" for a in align)
    return [row(head), "|" + rule] + [row(cells) for cells in rows]
