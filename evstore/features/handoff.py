"""Hand events to a command, and acknowledge only what it finished.

``evstore tail --checkpoint NAME --exec CMD [--batch N]`` is :func:`deliver`:
each event (or up to N events already committed) is written as NDJSON lines
to the stdin of a new run of ``sh -c CMD``, and only when that run exits 0
does the checkpoint move past them.  A run that fails stops the delivery
with :class:`HandlerFailed`, whose exit code is the run's, and the
checkpoint stays before its events: the next delivery under the same name
starts with them.  That is what a pipe cannot give (``tail | jq | …`` moves
the checkpoint when a line is written into the pipe, whatever happens to it
downstream); docs/TAIL.md, "Handing events to a command".

Nothing here prints.  The runs inherit the caller's stdout and stderr (the
command's own output is the only output), and get the events' coordinates
in their environment:

- every run: ``EVSTORE_CHECKPOINT`` (the name), ``EVSTORE_COUNT``,
  ``EVSTORE_FIRST_POSITION``, ``EVSTORE_LAST_POSITION``;
- with one event per run (batch 1, the default): ``EVSTORE_POSITION``,
  ``EVSTORE_STREAM``, ``EVSTORE_VERSION``, ``EVSTORE_TYPE``, ``EVSTORE_ID``.

Stopping (``Subscription.stop()``, e.g. from a SIGTERM handler) never kills
a run: the run in progress finishes, its result counts, and then delivery
ends.  A run that is killed (by the same Ctrl-C, say) is a failing run.
"""
from __future__ import annotations

import os
import signal
import subprocess

from ..errors import EvstoreError, UsageError
from .jsonio import dumps

#: Per-event variables: set for runs of one event, removed for batches (so
#: that a value inherited from the caller's environment cannot mislead).
EVENT_VARS = ("EVSTORE_POSITION", "EVSTORE_STREAM", "EVSTORE_VERSION", "EVSTORE_TYPE",
              "EVSTORE_ID")


class HandlerFailed(EvstoreError):
    """A run of the handler exited non-zero (or was killed): its events
    are not acknowledged.  ``exit_code`` is the run's (128 + N for signal N,
    as shells report it); ``position`` is the first event not handled."""

    def __init__(self, returncode: int, position: int, count: int, checkpoint: str | None,
                 acked: int):
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            how, self.exit_code = f"was killed by {name}", 128 - returncode
        else:
            how, self.exit_code = f"exited with {returncode}", returncode
        self.position = position
        what = f"the event at position {position}" if count == 1 else \
            f"{count} events from position {position}"
        where = (f"checkpoint {checkpoint!r} stays at {acked}: the next run starts at "
                 f"position {position}" if checkpoint else "not acknowledged")
        super().__init__(f"handler {how} on {what}; {where}")


def deliver(sub, command: str, batch: int = 1) -> int:
    """Run ``command`` for the events of ``sub`` (a Subscription made with
    ``ack="manual"``), ``batch`` at most per run; returns how many events were
    handled.  Raises HandlerFailed at the first failing run.  The caller
    closes ``sub`` (which saves the checkpoint)."""
    if not getattr(sub, "manual", False):
        raise UsageError("deliver() needs a subscription made with ack='manual'")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UsageError(f"invalid batch {batch!r}: must be a whole number >= 1")
    if not command or not command.strip():
        raise UsageError("the command to run is empty")
    handled = 0
    while True:
        events = sub.take(batch)
        if not events:
            return handled
        data = "".join(dumps(ev.to_dict()) + "\n" for ev in events).encode("utf-8")
        rc = subprocess.run(["/bin/sh", "-c", command], input=data,
                            env=environment(events, sub.checkpoint, batch == 1)).returncode
        if rc != 0:
            raise HandlerFailed(rc, events[0].position, len(events), sub.checkpoint,
                                sub.position)
        sub.ack(events[-1].position)
        handled += len(events)


def environment(events, checkpoint: str | None, per_event: bool) -> dict:
    """The run's environment: the caller's, plus the events' coordinates
    (as bytes: a type may hold characters an environment cannot)."""
    env = dict(os.environb)
    for k in EVENT_VARS + ("EVSTORE_CHECKPOINT",):
        env.pop(k.encode(), None)
    first, last = events[0], events[-1]
    extra = {"EVSTORE_COUNT": len(events), "EVSTORE_FIRST_POSITION": first.position,
             "EVSTORE_LAST_POSITION": last.position}
    if checkpoint is not None:
        extra["EVSTORE_CHECKPOINT"] = checkpoint
    if per_event and len(events) == 1:
        extra.update(EVSTORE_POSITION=first.position, EVSTORE_STREAM=first.stream,
                     EVSTORE_VERSION=first.version, EVSTORE_TYPE=first.type,
                     EVSTORE_ID=first.id)
    for k, v in extra.items():
        env[k.encode()] = str(v).encode("utf-8", "replace").replace(b"\0", b"")
    return env
