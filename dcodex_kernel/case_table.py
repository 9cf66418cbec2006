"""How a run with test cases is shown: one table of its CaseResults (case, verdict, time, memory,
detail) with a summary line, as text (terminal, `text/plain`) and as escaped HTML (Jupyter). The
one renderer every front door uses."""

from __future__ import annotations

import html
from typing import Iterable, Sequence

from .events import CaseResult

HEADINGS = ("case", "verdict", "time", "memory", "detail")
_DETAIL = 100  # characters of a detail shown (verdicts already cut each value short)


def summary(cases: Sequence[CaseResult]) -> str:
    """'7/8 accepted'."""
    return f"{sum(c.accepted for c in cases)}/{len(cases)} accepted"


def failure(cases: Sequence[CaseResult]) -> str:
    """'1 of 8 cases failed' ('' when every case is accepted): the one error's message."""
    failed = sum(not c.accepted for c in cases)
    return f"{failed} of {len(cases)} cases failed" if failed else ""


def rows(cases: Iterable[CaseResult]) -> list[tuple[str, ...]]:
    return [(c.name, c.verdict, f"{c.wall_s * 1000:.0f} ms", _memory(c.peak_memory), _detail(c))
            for c in cases]


def text_table(cases: Sequence[CaseResult]) -> str:
    """The table as aligned plain text, then the summary line; ends with a newline."""
    table = [HEADINGS, *rows(cases)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADINGS))]
    lines = []
    for row in table:
        cells = [cell.rjust(w) if i in (2, 3) else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.append(summary(cases))
    return "\n".join(lines) + "\n"


_COLOURS = {"accepted": "#1a7f37", "wrong_answer": "#cf222e"}


def html_table(cases: Sequence[CaseResult]) -> str:
    """The table as HTML (every value escaped), then the summary line."""
    head = "".join(f"<th>{h}</th>" for h in HEADINGS)
    body = []
    for c, row in zip(cases, rows(cases)):
        colour = _COLOURS.get(c.verdict, "#9a6700")
        cells = [f"<td>{html.escape(row[0])}</td>",
                 f'<td style="color:{colour};font-weight:bold">{html.escape(row[1])}</td>',
                 f'<td style="text-align:right">{html.escape(row[2])}</td>',
                 f'<td style="text-align:right">{html.escape(row[3])}</td>',
                 f"<td><code>{html.escape(row[4])}</code></td>" if row[4] else "<td></td>"]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<table class="dcodex-cases"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
            f"<p><b>{html.escape(summary(cases))}</b></p>")


def bundle(cases: Sequence[CaseResult]) -> dict:
    """The Jupyter mime bundle: text/html with a text/plain fallback."""
    return {"text/html": html_table(cases), "text/plain": text_table(cases)}


def _memory(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n else "-"


def _detail(case: CaseResult) -> str:
    text = " ".join(case.message.split())  # one line
    return text if len(text) <= _DETAIL else text[:_DETAIL - 1] + "…"
