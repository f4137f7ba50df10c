"""Terminal views with rich: only imported when stdout is a terminal (or
--format table), so pipes never pay for rich or see colour and markup.

Every table is laid out here (:func:`layout`), by one rule: the columns that
say *which* row it is (position, stream, version, type, a checkpoint's name)
get their width first; when the terminal is too narrow, what gives way is,
in this order, the optional columns (metadata), the free text (data), then
the timestamps (down to seconds, then to the time of day, then gone), and
only last the names.  A file or pipe (``--format table > out``) has no width: nothing
is cut there."""
from __future__ import annotations

import json
import sys

#: Control characters shown as escapes (\x1b, \n, ...) rather than sent to the
#: terminal: a stream id or type must not be able to move the cursor.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))}
_CONTROLS.update({0x09: "\\t", 0x0a: "\\n", 0x0d: "\\r"})

#: The space between two columns.
GAP = 2
#: Below this width a data column is not worth showing beside the others...
MIN_TEXT = 12
#: ... and an optional column (metadata) is dropped rather than shown this narrow.
MIN_EXTRA = 16
#: The narrowest a name column is cut to before anything else is given up.
MIN_ID = 8


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def width() -> int | None:
    """The terminal's width in columns, or None off a terminal (a file or a
    pipe has no width: tables written there are never cut)."""
    if not _is_tty(sys.stdout):
        return None
    return console().width


def console(stderr: bool = False):
    """A rich Console for stdout (or stderr).  Off a terminal it never emits
    colour or control codes, even with $FORCE_COLOR or $TTY_COMPATIBLE set,
    and it has no width limit (so nothing is cut or wrapped); --no-color,
    $NO_COLOR and EVSTORE_NO_COLOR=1 turn colour off on one."""
    from rich.console import Console

    from .base import no_color

    tty = _is_tty(sys.stderr if stderr else sys.stdout)
    return Console(stderr=stderr, force_terminal=None if tty else False,
                   width=None if tty else 1_000_000,
                   no_color=no_color(), highlight=False, soft_wrap=False)


def safe(value) -> str:
    """``value`` as one line of plain text: control characters escaped."""
    return str(value).translate(_CONTROLS)


def compact(value, width: int | None = 60) -> str:
    """One-line JSON of ``value``, cut with an ellipsis past ``width`` (None: never)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def text_of(value) -> str:
    """A cell's whole text: strings as they are, anything else as compact
    JSON, None as empty; control characters escaped."""
    if value is None:
        return ""
    return safe(value if isinstance(value, str) else compact(value, None))


def cut(text: str, width: int | None) -> str:
    """``text`` cut to ``width`` terminal cells with an ellipsis (None: whole)."""
    from rich.cells import cell_len, set_cell_size

    if width is None or cell_len(text) <= width:
        return text
    if width <= 0:
        return ""
    return set_cell_size(text, width - 1) + "…"


# --- timestamps --------------------------------------------------------------------------------

#: The forms a recorded_at takes as its column narrows: whole, to the
#: second, the time of day.
TIME_FORMS = ("full", "seconds", "time")
_TIME_WIDTH = {"full": 27, "seconds": 19, "time": 8, "stacked": 16}


def time_form(total: int | None) -> str:
    """The time form of line views (one line per event, laid out before the
    next event is known): by the terminal's width alone, so that every line
    of a view has the same form."""
    if total is None or total >= 100:
        return "full"
    return "seconds" if total >= 80 else "time"


def fmt_time(stamp: str, form: str) -> str:
    """An RFC 3339 ``...T..:..:..[.ffffff]Z`` stamp in the given form."""
    if form == "full" or len(stamp) < 19 or stamp[10] != "T":
        return stamp
    if form == "stacked":  # --wide, narrow: every digit, on two lines
        return stamp[:10] + "\n" + stamp[11:]
    if form == "seconds":
        return stamp[:10] + " " + stamp[11:19]
    return stamp[11:19]


# --- layout ------------------------------------------------------------------------------------

class Col:
    """A column: ``kind`` is ``id`` (says which row: stream, type, name),
    ``num`` (numbers: never cut), ``time`` (a recorded_at), ``text`` (free
    text such as data) or ``extra`` (shown only when there is room: metadata)."""

    __slots__ = ("header", "kind", "justify", "style")

    def __init__(self, header: str, kind: str, *, justify: str = "left", style: str = "") -> None:
        self.header, self.kind, self.justify, self.style = header, kind, justify, style


def layout(cols: list[Col], rows: list[list[str]], total: int | None, *, wide: bool = False):
    """Column widths (None: the column is left out) and the time form for
    ``rows`` of cell texts in ``total`` columns (None: no limit).

    Not wide: cells are cut with an ellipsis at their width, and the columns
    give way in the order the module docstring gives (:func:`_narrow`).
    Wide: nothing is cut (cells fold over several lines); numbers and times
    keep their width, and the other columns share what is left, each at
    least its header's width, so that no header is folded."""
    from rich.cells import cell_len

    nat = [max([cell_len(c.header)] + [cell_len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    for i, c in enumerate(cols):
        if c.kind == "time":
            nat[i] = max(cell_len(c.header), min(nat[i], _TIME_WIDTH["full"]))
    widths: list[int | None] = list(nat)
    if total is None or _used(widths) <= total:
        return widths, "full"
    if wide:
        _wide(cols, widths, nat, total)
        return widths, ("stacked" if any(widths[i] == _TIME_WIDTH["stacked"]
                                         for i, c in enumerate(cols) if c.kind == "time") else "full")
    return widths, _narrow(cols, widths, nat, total)


def _used(widths) -> int:
    """The cells a row of these widths takes, the gaps between columns included."""
    shown = [w for w in widths if w is not None]
    return sum(shown) + GAP * (len(shown) - 1)


def _narrow(cols, widths, nat, total: int) -> str:
    """Make ``widths`` fit ``total`` by cutting cells, in the order the
    module docstring gives; returns the time form."""
    from rich.cells import cell_len

    form = "full"
    # 1. optional columns: narrower, then gone
    for i, c in enumerate(cols):
        if c.kind == "extra" and _used(widths) > total:
            rest = widths[i] - (_used(widths) - total)
            widths[i] = rest if rest >= MIN_EXTRA else None
    # 2. free text, down to MIN_TEXT
    _shrink(widths, [i for i, c in enumerate(cols) if c.kind == "text"], _used(widths) - total,
            MIN_TEXT)
    # 3. timestamps: to the second, then the time of day
    for f in TIME_FORMS[1:]:
        if _used(widths) <= total:
            break
        form = f
        for i, c in enumerate(cols):
            if c.kind == "time":
                widths[i] = max(cell_len(time_header(c.header, f)), _TIME_WIDTH[f])
    # 4. the times go, if there is anything else to show
    if _used(widths) > total and any(c.kind != "time" for c in cols):
        for i, c in enumerate(cols):
            if c.kind == "time":
                widths[i] = None
    # 5. names, the later ones first, down to MIN_ID; then all text, to a few cells
    for i in reversed([i for i, c in enumerate(cols) if c.kind == "id"]):
        _shrink(widths, [i], _used(widths) - total, MIN_ID)
    _shrink(widths, [i for i, c in enumerate(cols) if c.kind in ("text", "id")],
            _used(widths) - total, 3)
    _give_back(cols, widths, nat, total)
    return form


def _give_back(cols, widths, nat, total: int) -> None:
    """What a narrower time form freed goes back to the free text, then to
    the optional columns."""
    for kind in ("text", "extra"):
        for i, c in enumerate(cols):
            room = total - _used(widths)
            if c.kind != kind or room <= 0:
                continue
            if widths[i] is None:
                if room - GAP >= MIN_EXTRA:
                    widths[i] = min(nat[i], room - GAP)
            elif widths[i] < nat[i]:
                widths[i] = min(nat[i], widths[i] + room)


def time_header(header: str, form: str) -> str:
    """A time column's header, shorter when the column holds only the time
    of day: "recorded_at" -> "recorded", "first_recorded_at" -> "first"."""
    if form != "time":
        return header
    return header.replace("_recorded_at", "").removesuffix("_at")[:_TIME_WIDTH["time"]]


def _wide(cols, widths, nat, total: int) -> None:
    """--wide: nothing is cut.  Times fold onto two lines (date, then time),
    an optional column that has no room is merged into the free text
    column (print_table shows it there on a line of its own), and the
    other columns share what is left, none narrower than its header."""
    from rich.cells import cell_len

    def floor(i: int) -> int:
        head = cell_len(cols[i].header)
        return min(nat[i], max(head, MIN_ID if cols[i].kind == "id" else MIN_TEXT))

    def room() -> int:
        shown = [i for i, w in enumerate(widths) if w is not None]
        fixed = sum(widths[i] for i in shown if cols[i].kind not in ("id", "text", "extra"))
        return total - fixed - GAP * (len(shown) - 1)

    flexible = lambda: [i for i, c in enumerate(cols)  # noqa: E731
                        if c.kind in ("id", "text", "extra") and widths[i] is not None]
    if sum(nat[i] for i in flexible()) > room():
        for i, c in enumerate(cols):
            if c.kind == "time":
                widths[i] = max(cell_len(c.header), _TIME_WIDTH["stacked"])
    if sum(floor(i) for i in flexible()) > room() and any(c.kind == "text" for c in cols):
        for i, c in enumerate(cols):
            if c.kind == "extra":
                widths[i] = None
    idx = flexible()
    for i in idx:
        widths[i] = None if cols[i].kind == "id" else widths[i]  # not placed yet
    ids = [i for i in idx if cols[i].kind == "id"]
    r = room() - GAP * len(ids)
    _share(widths, nat, idx, r, [floor(i) for i in idx], total, ids)


def _shrink(widths, idx, excess: int, floor: int) -> None:
    """Take ``excess`` cells from the columns ``idx``, widest first, none
    below ``floor`` (or its own width if already narrower)."""
    while excess > 0:
        live = [i for i in idx if widths[i] is not None and widths[i] > floor]
        if not live:
            return
        i = max(live, key=lambda j: widths[j])
        widths[i] -= 1
        excess -= 1


def _share(widths, nat, idx, room: int, floors, total: int, ids) -> None:
    """Wide tables: ``room`` cells shared by the columns ``idx``.  The name
    columns (``ids``) come first: each gets what it needs, up to a quarter
    of the terminal, as long as the others keep their floors; then the rest
    is shared out, a column that needs less than an equal share getting all
    it needs; none narrower than its floor (its header)."""
    floor = dict(zip(idx, floors))
    rest = [i for i in idx if i not in ids]
    for i in idx:
        if i in ids:
            spare = room - sum(floor[j] for j in idx if j != i and (j in rest or widths[j] is None))
            widths[i] = max(floor[i], min(nat[i], max(total // 4, floor[i]), spare))
            floor[i] = widths[i]
            room -= widths[i]
    order = sorted(rest, key=lambda j: nat[j])
    for k, i in enumerate(order):
        left = len(order) - k
        later = sum(floor[j] for j in order[k + 1:])
        widths[i] = max(floor[i], min(nat[i], room // left, room - later))
        room -= widths[i]


def print_table(cols: list[Col], rows: list[list], *, wide: bool = False, con=None) -> None:
    """Lay out and print one table of ``rows`` (cell values: str, or any JSON
    value, shown as compact JSON); time columns hold RFC 3339 stamps."""
    from rich.table import Table
    from rich.text import Text

    con = con or console()
    texts = [[text_of(v) for v in r] for r in rows]
    widths, form = layout(cols, texts, width(), wide=wide)
    t = Table(box=None, header_style="bold", pad_edge=False, show_header=True, collapse_padding=False)
    keep = [i for i, w in enumerate(widths) if w is not None]
    for i in keep:
        c = cols[i]
        header = time_header(c.header, form) if c.kind == "time" else c.header
        t.add_column(Text(safe(header)), justify=c.justify, style=c.style or None,
                     width=widths[i], no_wrap=not wide, overflow="fold" if wide else "ellipsis")
    merged = [i for i, c in enumerate(cols) if wide and c.kind == "extra" and widths[i] is None]
    into = next((i for i in keep if cols[i].kind == "text"), None)
    for r in texts:
        cells = []
        for i in keep:
            s = fmt_time(r[i], form) if cols[i].kind == "time" else r[i]
            if i == into:
                s += "".join(f"\n{cols[j].header}: {r[j]}" for j in merged if r[j])
            if not wide:
                s = cut(s, widths[i])
            cells.append(Text(s, justify=cols[i].justify, no_wrap=not wide,
                              overflow="fold" if wide else "ellipsis"))
        t.add_row(*cells)
    con.print(t)


def _empty(con, what: str) -> None:
    from rich.text import Text

    con.print(Text(f"({what})", style="dim"))


# --- the views -------------------------------------------------------------------------------

def event_line(ev, total: int | None, *, wide: bool = False):
    """One event as one line (the view of ``tail -f``): position,
    stream@version, type, time, data.  On a narrow terminal the time gives
    way first (seconds, then the time of day), then the data is cut.
    ``total``: the terminal's width (None: nothing is cut)."""
    from rich.text import Text

    data = text_of(ev.data)
    t = Text()
    t.append(f"{ev.position:>7} ", style="dim")
    t.append(safe(ev.stream), style="bold")
    t.append(f"@{ev.version} ")
    t.append(safe(ev.type), style="cyan")
    t.append(f" {fmt_time(ev.to_dict()['recorded_at'], time_form(total))} ", style="dim")
    t.append(data if wide or total is None else cut(data, max(total - t.cell_len, 1)))
    return t


def event_columns(with_metadata: bool = True) -> list[Col]:
    cols = [Col("pos", "num", justify="right", style="dim"), Col("stream", "id"),
            Col("ver", "num", justify="right"), Col("type", "id", style="cyan"),
            Col("data", "text"), Col("recorded_at", "time", style="dim")]
    if with_metadata:
        cols.append(Col("metadata", "extra", style="dim"))
    return cols


def event_row(ev) -> list:
    return [str(ev.position), ev.stream, str(ev.version), ev.type, ev.data,
            ev.to_dict()["recorded_at"], ev.metadata or None]


def events_table(events, chunk: int = 200, *, wide: bool = False) -> int:
    """Print events as tables of ``chunk`` rows: bounded memory on any stream.
    Rows fit the terminal (long cells end with an ellipsis); ``wide`` shows
    every cell whole, folded over several lines.  Metadata is shown when
    there is room for it (always with ``wide``, and in a file)."""
    con = console()
    n = 0
    rows: list[list] = []

    def flush():
        if rows:
            has_meta = any(r[-1] for r in rows)
            cols = event_columns(has_meta)
            print_table(cols, rows if has_meta else [r[:-1] for r in rows], wide=wide, con=con)
            rows.clear()

    for ev in events:
        rows.append(event_row(ev))
        n += 1
        if len(rows) >= chunk:
            flush()
    flush()
    if n == 0:
        _empty(con, "no events")
    return n


#: dict_table: which columns of a flat row say which row it is.
ID_KEYS = ("stream", "name", "type", "path", "reason")


def dict_table(rows, title: str | None = None, *, wide: bool = False) -> int:
    """Rows of flat dicts (the first row names the columns) as a table that
    fits the terminal; ``wide``: every cell whole."""
    con = console()
    rows = list(rows)
    if not rows:
        _empty(con, f"no {title or 'rows'}")
        return 0
    first = rows[0]
    cols = []
    for k, v in first.items():
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if number:
            cols.append(Col(k, "num", justify="right"))
        elif k.endswith("_at"):
            cols.append(Col(k, "time", style="dim"))
        elif k in ID_KEYS or not cols:
            cols.append(Col(k, "id"))
        else:
            cols.append(Col(k, "text"))
    print_table(cols, [[r.get(k) for k in first] for r in rows], wide=wide, con=con)
    return len(rows)


def info_table(data: dict, *, wide: bool = False, human: bool = False) -> None:
    """Key / value lines (``info``, a replayed state) that fit the terminal;
    ``human``: sizes (keys named bytes...) and counts as people read them."""
    rows = _human_rows(data) if human else [[k, "null" if v is None else v] for k, v in data.items()]
    cols = [Col("", "id", style="bold"), Col("", "text")]
    from rich.table import Table
    from rich.text import Text

    con = console()
    texts = [[text_of(k), text_of(v)] for k, v in rows]
    widths, _ = layout(cols, texts, width(), wide=wide)
    t = Table(box=None, show_header=False, pad_edge=False)
    for i, c in enumerate(cols):
        t.add_column(style=c.style or None, width=widths[i], no_wrap=not wide,
                     overflow="fold" if wide else "ellipsis")
    for r in texts:
        t.add_row(*(Text(s if wide else cut(s, w), no_wrap=not wide,
                         overflow="fold" if wide else "ellipsis") for s, w in zip(r, widths)))
    con.print(t)


def human_size(n: int) -> str:
    """1536 -> "1.5 KiB"; below 1 KiB, "N bytes"."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover


def _human_rows(data: dict) -> list[list]:
    """``info`` for people: one row per key; a nested object (bytes_by_kind)
    or a list of objects (checkpoints, per_stream) as indented rows, one
    per item, named by the item's first value."""
    rows: list[list] = []
    for k, v in data.items():
        if isinstance(v, dict) and v:
            rows.append([k, ""])
            rows += [[f"  {sk}", _human(k, sv)] for sk, sv in v.items()]
        elif isinstance(v, list) and v and all(isinstance(x, dict) and x for x in v):
            rows.append([k, ""])
            for item in v:
                (first, name), *rest = item.items()
                rows.append([f"  {name}", ", ".join(f"{rk} {_human(rk, rv)}" for rk, rv in rest)])
        else:
            rows.append([k, _human(k, v)])
    return rows


def _human(key: str, value):
    """``info`` on a terminal: byte counts as sizes (with the exact count),
    other counts with thousands separators; nested values alike."""
    if isinstance(value, bool) or value is None:
        return "null" if value is None else value
    if isinstance(value, int):
        if "bytes" in key or key == "size":
            return human_size(value) if value < 1024 else f"{human_size(value)} ({value:,} bytes)"
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_human(key if 'bytes' in key else k, v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(str(_human(key, v)) for v in value) or "(none)"
    return value
