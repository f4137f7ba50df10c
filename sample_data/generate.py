"""Generate the sample event sets in this folder, deterministically.

    python sample_data/generate.py            # rewrite the .ndjson files
    python sample_data/generate.py --check    # exit 1 if they are out of date

Standard library only. The same seed gives byte-identical files on every
platform and Python >= 3.10: only `random.Random` integer methods
(`randrange`, `choice`, `shuffle`, `getrandbits`) are used, never float
sampling, and the JSON is written with fixed separators.

What is written (see README.md for the stories in the data):

- accounts.ndjson  ~30 bank accounts, ~2000 events, interleaved in time order;
                   each line is an input event plus a "stream" key.
- orders.ndjson    ~200 orders (order-1001 ...), ~1500 events, same shape.
- acct-7.ndjson    acct-7's events alone, without "stream", ready for
                   `evstore append acct-7 < sample_data/acct-7.ndjson`.

Money is an integer number of minor units (cents; yen for JPY) so that sums
are exact. Every event carries an `id` made from the seeded generator, so an
export of a loaded store is reproducible and retries are recognisable.

Before writing, the generator replays every stream through reducers.py and
checks the result against its own bookkeeping, so the sample data and the
sample reducers cannot drift apart silently.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import uuid
from pathlib import Path

SEED = 20261128
HERE = Path(__file__).resolve().parent

# ---------------------------------------------------------------- helpers


class Timeline:
    """Events of many streams, each with a simulated time, merged at the end.

    Times are integer minutes since an arbitrary epoch. They only order the
    lines of the combined file (the store assigns `recorded_at` itself);
    ties keep the order in which events were added, so a stream's own events
    always stay in order.
    """

    def __init__(self) -> None:
        self._items: list[tuple[int, int, str, dict]] = []

    def add(self, minute: int, stream: str, event: dict) -> None:
        self._items.append((minute, len(self._items), stream, event))

    def merged(self) -> list[tuple[str, dict]]:
        return [(stream, event) for _, _, stream, event in sorted(self._items, key=lambda t: (t[0], t[1]))]


def make_id(rng: random.Random) -> str:
    """A version-4 UUID string drawn from the seeded generator."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def event(rng: random.Random, type_: str, data: dict | None = None, metadata: dict | None = None) -> dict:
    """An input event; `data`/`metadata` left out when absent."""
    ev: dict = {"type": type_}
    if data is not None:
        ev["data"] = data
    if metadata is not None:
        ev["metadata"] = metadata
    ev["id"] = make_id(rng)
    return ev


# ---------------------------------------------------------------- accounts

OWNERS = [
    "Alice Martin", "Bob Chen", "Zoë Ångström", "José Núñez", "Łukasz Żółkiewski",
    "渡辺 美咲", "Ольга Иванова", "Αθηνά Παππά", "محمد العلي", "Siobhán Ó Briain",
    "Priya Raghunathan", "Kwame Mensah", "Ingrid Sørensen", "Nguyễn Thị Mai",
    "김민준", "François Lefèvre", "Dvořák Antonín", "Çağla Öztürk", "Björn Þórsson",
    "Emma Wilson", "Lars Müller", "Ana María Pérez", "Tomás O'Connor", "李伟",
    "Ayşe Yılmaz", "Søren Kierkegaard", "Hannah Goldberg", "Mateus Gonçalves",
    "Ève Moreau", "Rahul Sharma",
]
CURRENCIES = ["EUR", "EUR", "EUR", "GBP", "USD", "USD", "SEK", "JPY", "CHF"]
TELLERS = ["teller-ana", "teller-bo", "teller-kim", "teller-ole"]
N_ACCOUNTS = 30
STORY_ACCOUNT = 7           # acct-7 is the one that goes negative
CLOSED_ACCOUNTS = {4, 12, 19, 26}


def _account_meta(rng: random.Random, owner_handle: str, kind: str) -> dict | None:
    """Metadata on most events: who did it and through which channel."""
    if rng.randrange(10) == 0:
        return None                                   # some events carry none
    if kind == "deposit":
        channel = rng.choice(["web", "mobile", "branch", "transfer", "transfer"])
    else:
        channel = rng.choice(["atm", "card", "card", "web", "mobile", "branch"])
    if channel == "branch":
        by = rng.choice(TELLERS)
    elif channel == "transfer":
        by = "payments-batch"
    elif channel == "atm":
        by = f"atm-{rng.randrange(100, 1000):04d}"
    elif channel == "card":
        by = "card-gateway"
    else:
        by = owner_handle
    return {"by": by, "channel": channel}


def _ordinary_account(rng: random.Random, tl: Timeline, n: int, books: dict) -> None:
    """An account whose balance never goes below zero."""
    stream = f"acct-{n}"
    owner = OWNERS[(n - 1) % len(OWNERS)]
    currency = CURRENCIES[rng.randrange(len(CURRENCIES))]
    scale = 100 if currency == "JPY" else 1        # yen have no cents
    handle = f"user-{n}"
    minute = rng.randrange(0, 60 * 24 * 20)
    tl.add(minute, stream, event(rng, "AccountOpened", {"owner": owner, "currency": currency},
                                 {"by": rng.choice(TELLERS), "channel": "branch"}))
    balance = 0
    for _ in range(rng.randrange(45, 85)):
        minute += rng.randrange(30, 60 * 24 * 3)
        if balance < 5000 * scale or rng.randrange(5) < 2:
            amount = rng.randrange(10, 2500) * 100 * scale // 10
            balance += amount
            tl.add(minute, stream, event(rng, "Deposited", {"amount": amount},
                                         _account_meta(rng, handle, "deposit")))
        else:
            amount = min(balance, rng.randrange(5, 900) * 100 * scale // 10)
            balance -= amount
            tl.add(minute, stream, event(rng, "Withdrawn", {"amount": amount},
                                         _account_meta(rng, handle, "withdrawal")))
    status = "open"
    if n in CLOSED_ACCOUNTS:
        minute += rng.randrange(60, 60 * 24 * 5)
        if balance:
            tl.add(minute, stream, event(rng, "Withdrawn", {"amount": balance},
                                         {"by": rng.choice(TELLERS), "channel": "branch"}))
            balance = 0
        tl.add(minute + 1, stream, event(rng, "AccountClosed", None,
                                         {"by": rng.choice(TELLERS), "channel": "branch"}))
        status = "closed"
    books[stream] = {"owner": owner, "currency": currency, "balance": balance,
                     "status": status, "overdrawn_count": 0}


def _story_account(rng: random.Random, tl: Timeline, books: dict) -> None:
    """acct-7: healthy for months, then an ATM withdrawal is recorded twice.

    The ATM (atm-0412) timed out waiting for the bank and retried; the retry
    was recorded as a second Withdrawn with the same `ref` in its metadata.
    That duplicate takes the balance below zero (Overdrawn follows), and a few
    small card payments afterwards dig it deeper. `replay --steps` shows the
    exact version where the balance crosses zero; the two events just before
    it share a ref.
    """
    stream = f"acct-{STORY_ACCOUNT}"
    owner = OWNERS[STORY_ACCOUNT - 1]
    handle = "olga.ivanova"
    minute = 60 * 24 * 2
    tl.add(minute, stream, event(rng, "AccountOpened", {"owner": owner, "currency": "EUR"},
                                 {"by": "teller-kim", "channel": "branch"}))
    balance = 0
    # Months of ordinary life: a salary, rent, card spending.
    for month in range(6):
        minute += 60 * 24 * 3
        salary = 285000
        balance += salary
        tl.add(minute, stream, event(rng, "Deposited", {"amount": salary},
                                     {"by": "payments-batch", "channel": "transfer"}))
        minute += 60 * 24
        rent = 120000
        balance -= rent
        tl.add(minute, stream, event(rng, "Withdrawn", {"amount": rent},
                                     {"by": handle, "channel": "web"}))
        for _ in range(rng.randrange(5, 8)):
            minute += rng.randrange(60 * 6, 60 * 24 * 3)
            amount = rng.randrange(8, 160) * 100
            if balance - amount < 30000:     # comfortable in the ordinary months
                continue
            balance -= amount
            tl.add(minute, stream, event(rng, "Withdrawn", {"amount": amount},
                                         {"by": "card-gateway", "channel": "card"}))
    # The run-up: a down payment and a big card purchase leave a small,
    # still positive balance.
    for amount, by, channel in ((balance - rng.randrange(500, 600) * 100, handle, "web"),
                                (25000, "card-gateway", "card")):
        minute += 60 * 24
        balance -= amount
        tl.add(minute, stream, event(rng, "Withdrawn", {"amount": amount},
                                     {"by": by, "channel": channel}))
    assert 25000 <= balance < 35000, balance
    # The incident: one 200.00 ATM withdrawal, recorded twice.
    minute += 60 * 24
    ref = "atm-0412-20260314-0931"
    atm = {"by": "atm-0412", "channel": "atm", "ref": ref}
    balance -= 20000
    tl.add(minute, stream, event(rng, "Withdrawn", {"amount": 20000}, dict(atm)))
    balance -= 20000
    tl.add(minute + 1, stream, event(rng, "Withdrawn", {"amount": 20000}, {**atm, "retry": 1}))
    assert balance < 0
    tl.add(minute + 1, stream, event(rng, "Overdrawn", {"balance": balance},
                                     {"by": "ledger", "channel": "system"}))
    # Nobody notices for a while: small card payments keep going through.
    for _ in range(4):
        minute += rng.randrange(60 * 3, 60 * 24)
        amount = rng.randrange(4, 40) * 100
        balance -= amount
        tl.add(minute, stream, event(rng, "Withdrawn", {"amount": amount},
                                     {"by": "card-gateway", "channel": "card"}))
    books[stream] = {"owner": owner, "currency": "EUR", "balance": balance,
                     "status": "open", "overdrawn_count": 1}


def generate_accounts(rng: random.Random) -> tuple[list[tuple[str, dict]], dict]:
    tl = Timeline()
    books: dict = {}
    for n in range(1, N_ACCOUNTS + 1):
        if n == STORY_ACCOUNT:
            _story_account(rng, tl, books)
        else:
            _ordinary_account(rng, tl, n, books)
    return tl.merged(), books


# ---------------------------------------------------------------- orders

CATALOGUE = {                      # sku -> price in cents
    "SKU-MUG-01": 1250, "SKU-MUG-02": 1490, "SKU-TEE-S": 1999, "SKU-TEE-M": 1999,
    "SKU-TEE-L": 2199, "SKU-HOOD-M": 4900, "SKU-CAP-01": 1800, "SKU-BOOK-ES": 3450,
    "SKU-BOOK-DDD": 5200, "SKU-STICK-10": 500, "SKU-POSTER-A2": 1500,
    "SKU-KBD-60": 8900, "SKU-MOUSE-01": 3900, "SKU-CABLE-C": 990, "SKU-LAMP-01": 6400,
    "SKU-NOTE-A5": 790, "SKU-PEN-GEL": 350, "SKU-BAG-TOTE": 2500,
}
CUSTOMERS = [
    "cust-ana.lima", "cust-bo.svensson", "cust-chen.wei", "cust-dara.obi",
    "cust-élodie.roux", "cust-fatima.z", "cust-gunnar", "cust-hiro.tanaka",
    "cust-ines.costa", "cust-jakub.nowak", "cust-karin", "cust-li.na",
    "cust-marta.ruiz", "cust-noor", "cust-olu.ade", "cust-pavel", "cust-quinn",
    "cust-rosa", "cust-søren", "cust-tomoko", "cust-uma", "cust-vikram",
    "cust-wren", "cust-xavier", "cust-yara", "cust-zeynep",
]
CARRIERS = {"DHL": "JD01460000{:08d}", "UPS": "1Z999AA1{:010d}", "PostNL": "3SABCD{:09d}",
            "La Poste": "6A{:011d}", "Royal Mail": "RM{:09d}GB"}
CANCEL_REASONS = ["customer request", "payment timeout", "out of stock",
                  "duplicate order", "address could not be verified"]
N_ORDERS = 200
FIRST_ORDER = 1001


def _total(items: list[dict]) -> int:
    return sum(item["qty"] * item["price"] for item in items)


def _order(rng: random.Random, tl: Timeline, number: int, minute: int, books: dict) -> None:
    stream = f"order-{number}"
    customer = rng.choice(CUSTOMERS)
    channel = rng.choice(["web", "web", "mobile", "marketplace"])
    meta = {"by": customer, "channel": channel}
    skus = rng.sample(sorted(CATALOGUE), rng.randrange(1, 5))
    items = [{"sku": s, "qty": rng.randrange(1, 4), "price": CATALOGUE[s]} for s in skus]
    tl.add(minute, stream, event(rng, "OrderPlaced",
                                 {"customer": customer, "items": [dict(i) for i in items],
                                  "total": _total(items)}, dict(meta)))
    # Cart edits before payment: shoppers add and remove things.
    for _ in range(rng.choice([0, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8])):
        minute += rng.randrange(1, 40)
        present = [i["sku"] for i in items]
        if len(items) > 1 and rng.randrange(3) == 0:
            sku = rng.choice(present)
            items = [i for i in items if i["sku"] != sku]
            tl.add(minute, stream, event(rng, "ItemRemoved", {"sku": sku, "total": _total(items)},
                                         dict(meta)))
        else:
            sku = rng.choice(sorted(CATALOGUE))
            qty = rng.randrange(1, 3)
            added = {"sku": sku, "qty": qty, "price": CATALOGUE[sku]}
            if sku in present:
                items = [dict(i, qty=i["qty"] + qty) if i["sku"] == sku else i for i in items]
            else:
                items = items + [added]
            tl.add(minute, stream, event(rng, "ItemAdded", dict(added, total=_total(items)),
                                         dict(meta)))
    state = {"customer": customer, "status": "placed", "items": items, "total": _total(items),
             "paid": 0, "carrier": None, "tracking": None, "cancel_reason": None}
    fate = rng.randrange(100)
    if fate < 8:                                    # cancelled before paying
        minute += rng.randrange(30, 60 * 48)
        reason = rng.choice(CANCEL_REASONS)
        by = customer if reason in ("customer request", "duplicate order") else "shop-system"
        tl.add(minute, stream, event(rng, "OrderCancelled", {"reason": reason},
                                     {"by": by, "channel": channel if by == customer else "system"}))
        state.update(status="cancelled", cancel_reason=reason)
        books[stream] = state
        return
    minute += rng.randrange(1, 60 * 6)
    if rng.randrange(100) < 7:                      # paid in two instalments
        first = state["total"] // 2
        tl.add(minute, stream, event(rng, "PaymentReceived", {"amount": first},
                                     {"by": "psp-adyen", "channel": "payment"}))
        minute += rng.randrange(60, 60 * 24)
        tl.add(minute, stream, event(rng, "PaymentReceived", {"amount": state["total"] - first},
                                     {"by": "psp-adyen", "channel": "payment"}))
    else:
        tl.add(minute, stream, event(rng, "PaymentReceived", {"amount": state["total"]},
                                     {"by": rng.choice(["psp-adyen", "psp-stripe"]), "channel": "payment"}))
    state.update(status="paid", paid=state["total"])
    if fate < 13:                                   # paid, then cancelled
        minute += rng.randrange(30, 60 * 24)
        reason = rng.choice(["out of stock", "customer request"])
        tl.add(minute, stream, event(rng, "OrderCancelled", {"reason": reason},
                                     {"by": "support-desk", "channel": "support"}))
        state.update(status="cancelled", cancel_reason=reason)
        books[stream] = state
        return
    if fate >= 96:                                  # still waiting in the warehouse
        books[stream] = state
        return
    minute += rng.randrange(60 * 4, 60 * 24 * 2)
    carrier = rng.choice(sorted(CARRIERS))
    tracking = CARRIERS[carrier].format(rng.randrange(10 ** 8))
    tl.add(minute, stream, event(rng, "OrderShipped", {"carrier": carrier, "tracking": tracking},
                                 {"by": rng.choice(["warehouse-ams", "warehouse-lyon"]), "channel": "warehouse"}))
    state.update(status="shipped", carrier=carrier, tracking=tracking)
    if fate < 90:
        minute += rng.randrange(60 * 12, 60 * 24 * 5)
        tl.add(minute, stream, event(rng, "OrderDelivered", None,
                                     {"by": f"carrier-{carrier.lower().replace(' ', '-')}", "channel": "carrier"}))
        state.update(status="delivered")
    books[stream] = state


def generate_orders(rng: random.Random) -> tuple[list[tuple[str, dict]], dict]:
    tl = Timeline()
    books: dict = {}
    minute = 0
    for number in range(FIRST_ORDER, FIRST_ORDER + N_ORDERS):
        minute += rng.randrange(5, 90)              # order numbers follow placement time
        _order(rng, tl, number, minute, books)
    return tl.merged(), books


# ---------------------------------------------------------------- output


def to_ndjson(lines: list[dict]) -> bytes:
    """One JSON object per line, UTF-8, Unicode unescaped, LF endings."""
    return "".join(json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")) + "\n"
                   for obj in lines).encode("utf-8")


def with_stream(stream: str, ev: dict) -> dict:
    return {"stream": stream, **ev}


def self_check(events: list[tuple[str, dict]], books: dict, reducer) -> None:
    """Replay every stream through `reducer` and compare with the generator's books."""
    states: dict = {}
    versions: dict = {}
    for position, (stream, ev) in enumerate(events, start=1):
        versions[stream] = versions.get(stream, 0) + 1
        recorded = {"stream": stream, "version": versions[stream], "position": position,
                    "id": ev["id"], "type": ev["type"], "data": ev.get("data", {}),
                    "metadata": ev.get("metadata", {}),
                    "recorded_at": "2026-11-28T12:00:00.000000Z"}
        before = states.get(stream)
        states[stream] = reducer(before, recorded)
        if before is not None and states[stream] is before:
            raise AssertionError(f"{reducer.__name__} returned its input state at {stream}")
    for stream, expected in books.items():
        got = {k: states[stream].get(k) for k in expected}
        if got != expected:
            raise AssertionError(f"{reducer.__name__} disagrees on {stream}:\n  {got}\n  {expected}")


def build(seed: int) -> dict[str, bytes]:
    """All files, by name, as bytes."""
    spec = importlib.util.spec_from_file_location("sample_reducers", HERE / "reducers.py")
    reducers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reducers)
    rng = random.Random(seed)
    accounts, account_books = generate_accounts(rng)
    orders, order_books = generate_orders(rng)
    self_check(accounts, account_books, reducers.balance)
    self_check(orders, order_books, reducers.order_status)
    negative = sorted(s for s, b in account_books.items() if b["balance"] < 0)
    assert negative == [f"acct-{STORY_ACCOUNT}"], negative
    story = f"acct-{STORY_ACCOUNT}"
    return {
        "accounts.ndjson": to_ndjson([with_stream(s, ev) for s, ev in accounts]),
        "orders.ndjson": to_ndjson([with_stream(s, ev) for s, ev in orders]),
        f"{story}.ndjson": to_ndjson([ev for s, ev in accounts if s == story]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a file differs from what would be written")
    args = parser.parse_args(argv)
    files = build(args.seed)
    stale = []
    for name, content in files.items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_bytes() != content:
                stale.append(name)
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        lines = content.count(b"\n")
        print(f"wrote {path} ({lines} events)", file=sys.stderr)
    if stale:
        print(f"out of date: {', '.join(stale)} (run python sample_data/generate.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
