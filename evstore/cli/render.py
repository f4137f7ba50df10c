"""Terminal views with rich: only imported when stdout is a terminal (or
--format table), so pipes never pay for rich or see colour and markup."""
from __future__ import annotations

import json
import sys

#: Control characters shown as escapes (\x1b, \n, ...) rather than sent to the
#: terminal: a stream id or type must not be able to move the cursor.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))}
_CONTROLS.update({0x09: "\\t", 0x0a: "\\n", 0x0d: "\\r"})


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def console(stderr: bool = False):
    """A rich Console for stdout (or stderr).  Off a terminal it never emits
    colour or control codes, even with $FORCE_COLOR or $TTY_COMPATIBLE set;
    --no-color, $NO_COLOR and EVSTORE_NO_COLOR=1 turn colour off on one."""
    from rich.console import Console

    from .common import no_color

    tty = _is_tty(sys.stderr if stderr else sys.stdout)
    return Console(stderr=stderr, force_terminal=None if tty else False,
                   no_color=no_color(), highlight=False, soft_wrap=False)


def safe(value) -> str:
    """``value`` as one line of plain text: control characters escaped."""
    return str(value).translate(_CONTROLS)


def cell(value, *, wide: bool = False, width: int = 60, style: str = "", justify=None):
    """A table cell from user data: a rich Text, never parsed as markup.
    Not wide: one line, cut with an ellipsis at the column's width."""
    from rich.text import Text

    if value is None:
        value = ""
    if not isinstance(value, str):
        value = compact(value, None if wide else width)
    if wide:
        return Text(safe(value), style=style, justify=justify, overflow="fold")
    return Text(safe(value), style=style, justify=justify, no_wrap=True, overflow="ellipsis")


def _column(table, header, *, wide: bool, fixed: bool = False, **kw) -> None:
    """Columns of user data may shrink to fit the terminal (their cells cut
    themselves with an ellipsis, or fold with --wide); ``fixed`` columns
    (numbers, times) keep their width as long as anything else can give."""
    from rich.text import Text

    table.add_column(Text(safe(header)), no_wrap=fixed,
                     overflow="fold" if wide and not fixed else "ellipsis", **kw)


def compact(value, width: int | None = 60) -> str:
    """One-line JSON of ``value``, cut with an ellipsis past ``width`` (None: never)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def _empty(con, what: str) -> None:
    from rich.text import Text

    con.print(Text(f"({what})", style="dim"))


def events_table(events, chunk: int = 200, *, wide: bool = False) -> int:
    """Print events as tables of ``chunk`` rows: bounded memory on any stream.
    Rows fit the terminal (long cells end with an ellipsis); ``wide`` shows
    every cell whole, folded over several lines."""
    from rich.table import Table

    con = console()
    n = 0
    rows = []

    def flush():
        if not rows:
            return
        t = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        _column(t, "pos", wide=wide, fixed=True, justify="right", style="dim")
        _column(t, "stream", wide=wide)
        _column(t, "ver", wide=wide, fixed=True, justify="right")
        _column(t, "type", wide=wide, style="cyan")
        _column(t, "data", wide=wide)
        _column(t, "recorded_at", wide=wide, fixed=True, style="dim")
        for r in rows:
            t.add_row(*r)
        con.print(t)
        rows.clear()

    for ev in events:
        rows.append((cell(str(ev.position), justify="right"), cell(ev.stream, wide=wide),
                     cell(str(ev.version), justify="right"), cell(ev.type, wide=wide),
                     cell(ev.data, wide=wide, width=200), cell(ev.to_dict()["recorded_at"])))
        n += 1
        if len(rows) >= chunk:
            flush()
    flush()
    if n == 0:
        _empty(con, "no events")
    return n


def dict_table(rows, title: str | None = None, *, wide: bool = False) -> int:
    """Rows of flat dicts (the first row names the columns) as a table that
    fits the terminal; ``wide``: every cell whole."""
    from rich.table import Table

    con = console()
    t = Table(box=None, header_style="bold", pad_edge=False)
    n = 0
    for row in rows:
        if n == 0:
            for k, v in row.items():
                number = isinstance(v, (int, float)) and not isinstance(v, bool)
                _column(t, k, wide=wide, fixed=number or k.endswith("_at"),
                        justify="right" if number else None)
        t.add_row(*(cell(v, wide=wide) for v in row.values()))
        n += 1
    if n:
        con.print(t)
    else:
        _empty(con, f"no {title or 'rows'}")
    return n


def info_table(data: dict, *, wide: bool = False) -> None:
    """Key / value lines (``info``, a replayed state) that fit the terminal."""
    from rich.table import Table

    t = Table(box=None, show_header=False, pad_edge=False)
    t.add_column(style="bold", no_wrap=not wide, overflow="fold" if wide else "ellipsis")
    _column(t, "", wide=wide)
    for k, v in data.items():
        v = "null" if v is None else v
        t.add_row(cell(k, wide=wide), cell(v, wide=wide, width=None if wide else 400))
    console().print(t)
