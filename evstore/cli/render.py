"""Terminal views with rich: only imported when stdout is a terminal (or
--format table), so pipes never pay for rich or see colour and markup."""
from __future__ import annotations

import json
import os


def console():
    from rich.console import Console

    no_color = bool(os.environ.get("NO_COLOR")) or os.environ.get("EVSTORE_NO_COLOR") == "1"
    return Console(no_color=no_color, highlight=False, soft_wrap=False)


def compact(value, width: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def events_table(events, chunk: int = 200) -> int:
    """Print events as tables of ``chunk`` rows: bounded memory on any stream."""
    from rich.table import Table

    con = console()
    n = 0
    rows = []

    def flush():
        if not rows:
            return
        t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        t.add_column("pos", justify="right", style="dim")
        t.add_column("stream", overflow="fold")
        t.add_column("ver", justify="right")
        t.add_column("type", style="cyan", overflow="fold")
        t.add_column("data", overflow="ellipsis", no_wrap=True, ratio=1)
        t.add_column("recorded_at", style="dim", no_wrap=True)
        for r in rows:
            t.add_row(*r)
        con.print(t)
        rows.clear()

    for ev in events:
        rows.append((str(ev.position), ev.stream, str(ev.version), ev.type,
                     compact(ev.data, 200), ev.to_dict()["recorded_at"]))
        n += 1
        if len(rows) >= chunk:
            flush()
    flush()
    if n == 0:
        con.print("[dim](no events)[/dim]")
    return n


def dict_table(rows, title: str | None = None) -> int:
    from rich.table import Table

    con = console()
    t = Table(box=None, header_style="bold", pad_edge=False)
    n = 0
    for row in rows:
        if n == 0:
            for k in row:
                t.add_column(k, overflow="fold")
        t.add_row(*("" if v is None else (v if isinstance(v, str) else compact(v)) for v in row.values()))
        n += 1
    if n:
        con.print(t)
    else:
        con.print(f"[dim](no {title or 'rows'})[/dim]")
    return n


def info_table(data: dict) -> None:
    from rich.table import Table

    t = Table(box=None, show_header=False, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in data.items():
        t.add_row(k, v if isinstance(v, str) else compact(v, 100))
    console().print(t)
