"""Reducers for the sample event sets, for `evstore replay` and `snapshot`.

    evstore replay acct-7 --reducer sample_data/reducers.py:balance --steps
    evstore replay order-1001 --reducer sample_data/reducers.py:order_status

A reducer is `(state, event) -> state`. `event` is a recorded event as a dict
(stream, version, position, id, type, data, metadata, recorded_at)
and the first call gets `state=None`.

Both reducers are pure: they never change the state or the event they are
given and always return a new dict. The store may keep the state it passed in
(as a snapshot, or as the "before" side of `replay --steps`), so changing it
in place would corrupt the snapshot or hide the change being debugged.

Unknown event types leave the state as it was (as a copy): a stream may gain
new kinds of events long after a reducer was written, and replaying old
reducers over new streams should not fail.
"""

from __future__ import annotations


def balance(state: dict | None, event: dict) -> dict:
    """Fold an account stream (AccountOpened, Deposited, Withdrawn, Overdrawn,
    AccountClosed) into {owner, currency, balance, status, overdrawn_count}.

    The balance is computed from the Deposited and Withdrawn amounts rather
    than taken from Overdrawn's `balance`: Overdrawn is a notification that
    reports what the ledger saw at that moment, and recomputing lets a replay
    show when the two disagree. Amounts are integers in minor units (cents),
    so the sums are exact.

    Events after AccountClosed are still applied, not rejected: a reducer
    describes what happened, and a debugging replay should show an event that
    should not be there rather than stop at it.
    """
    if state is None:
        state = {"owner": None, "currency": None, "balance": 0,
                 "status": "new", "overdrawn_count": 0}
    data = event.get("data")
    if not isinstance(data, dict):
        data = {}
    kind = event.get("type")
    new = dict(state)
    if kind == "AccountOpened":
        new["owner"] = data.get("owner")
        new["currency"] = data.get("currency")
        new["status"] = "open"
    elif kind == "Deposited":
        new["balance"] = state["balance"] + data.get("amount", 0)
    elif kind == "Withdrawn":
        new["balance"] = state["balance"] - data.get("amount", 0)
    elif kind == "Overdrawn":
        new["overdrawn_count"] = state["overdrawn_count"] + 1
    elif kind == "AccountClosed":
        new["status"] = "closed"
    return new


def order_status(state: dict | None, event: dict) -> dict:
    """Fold an order stream into {customer, status, items, total, paid,
    carrier, tracking, cancel_reason}.

    `items` is a list of {sku, qty, price} in the order the SKUs were first
    added. ItemAdded for a SKU already in the order adds to its quantity;
    ItemRemoved drops the SKU's line entirely.

    `total` is recomputed from the items after every event instead of being
    copied from the events' `total` fields: the events' totals are what the
    shop computed at the time, and keeping an independent sum here makes a
    pricing bug visible as a difference between this reducer and `merge`.

    `paid` accumulates PaymentReceived amounts, since an order may be paid in
    instalments; the status says "partly paid" until the payments cover
    the total. Otherwise `status` follows the last lifecycle event (placed,
    paid, shipped, delivered, cancelled); cart edits do not change it.
    """
    if state is None:
        state = {"customer": None, "status": "new", "items": [], "total": 0,
                 "paid": 0, "carrier": None, "tracking": None, "cancel_reason": None}
    data = event.get("data")
    if not isinstance(data, dict):
        data = {}
    kind = event.get("type")
    new = dict(state)
    items = [dict(item) for item in state["items"]]   # never share lines with the input
    if kind == "OrderPlaced":
        new["customer"] = data.get("customer")
        new["status"] = "placed"
        items = [{"sku": i.get("sku"), "qty": i.get("qty", 1), "price": i.get("price", 0)}
                 for i in data.get("items", [])]
    elif kind == "ItemAdded":
        sku = data.get("sku")
        qty = data.get("qty", 1)
        for item in items:
            if item["sku"] == sku:
                item["qty"] += qty
                break
        else:
            items.append({"sku": sku, "qty": qty, "price": data.get("price", 0)})
    elif kind == "ItemRemoved":
        items = [item for item in items if item["sku"] != data.get("sku")]
    elif kind == "PaymentReceived":
        new["paid"] = state["paid"] + data.get("amount", 0)
        new["status"] = "paid" if new["paid"] >= state["total"] else "partly paid"
    elif kind == "OrderShipped":
        new["carrier"] = data.get("carrier")
        new["tracking"] = data.get("tracking")
        new["status"] = "shipped"
    elif kind == "OrderDelivered":
        new["status"] = "delivered"
    elif kind == "OrderCancelled":
        new["cancel_reason"] = data.get("reason")
        new["status"] = "cancelled"
    new["items"] = items
    new["total"] = sum(item["qty"] * item["price"] for item in items)
    return new
