"""Store semantics on top of the disk layer: streams, versions, positions, the writer lock,
durability and the library API (EventStore).

EventStore's replay, subscribe, snapshots and verify methods are the library's documented entry
points to features: they import them when called, so the core never depends on a
feature at import time.
"""
