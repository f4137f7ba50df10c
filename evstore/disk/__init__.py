"""The on-disk format: frames, records, segments, offset indexes, the commit log and stream logs,
and the recovery steps that cut torn tails and reconcile after a power cut.

Nothing here knows about expected versions, locks or features; docs/FORMAT.md is the reference.
"""
