"""Small helpers for the backend tests: events ready to append."""
from __future__ import annotations

from evstore.core.backend import Prepared
from evstore.model import normalize, pack_fields


def prep(*events) -> list[Prepared]:
    """Dicts (or type names) -> Prepared events, as the front end makes them."""
    out = []
    for e in events:
        n = normalize({"type": e} if isinstance(e, str) else e)
        out.append(Prepared(n.id, n.type, pack_fields(n, 16 << 20)))
    return out


def with_ids(prepared: list[Prepared]) -> list[str]:
    return [p.id for p in prepared]


def fill(backend, spec: str) -> None:
    """``fill(b, "a:T a:U b:T")``: one single-event append per item."""
    for item in spec.split():
        stream, etype = item.split(":")
        backend.append(stream, prep(etype), "any")
