"""``evstore checkpoints``: list, delete, reset or set durable consumers'
checkpoints (what ``tail --checkpoint`` saves).

Why apart from ``cmd_tail.py``: the commands that manage checkpoints are a
group of their own; following the store is ``tail``'s.
"""
from __future__ import annotations

import sys
from typing import Annotated

import typer

from .common import FormatOpt, StoreOpt, WideOpt, complete_checkpoint, fail, open_store, pick_format

CHECKPOINTS_HELP = """List, delete or reset durable consumers' checkpoints.

A durable consumer is 'evstore tail --checkpoint NAME'.

Without a subcommand, lists them: one line each with the name, the position
the consumer has handled, the store's head, how many positions it is
behind, the stream it follows (null: all), and when it last moved.

Examples:

\b
    evstore checkpoints
    evstore checkpoints --format json | jq '.[] | select(.behind > 1000)'
    evstore checkpoints reset proj               # replay from the beginning
    evstore checkpoints reset proj --to head     # skip to now
    evstore checkpoints set job 1200             # job handled everything up to 1200
    evstore checkpoints delete proj
"""

LIST_HELP = """List the checkpoints (as 'evstore checkpoints').

Example:

\b
    evstore checkpoints list --format table
"""

DELETE_HELP = """Delete the checkpoint NAME. Its consumer, run again, starts afresh.

Refused (exit 1) while a consumer runs under NAME; exit 4 when there is no
such checkpoint.

Example:

\b
    evstore checkpoints delete proj
"""

RESET_HELP = """Move the checkpoint NAME to position P (default 0).

Its consumer resumes at P + 1. Creates the checkpoint when it does not exist.

P is a position in the store ('evstore read --all' shows them), 0 for the
beginning, or 'head' for the current head (skip everything so far). Refused
(exit 1) while a consumer runs under NAME.

Examples:

\b
    evstore checkpoints reset proj                # process everything again
    evstore checkpoints reset proj --to 1200
    evstore checkpoints reset mailer --to head    # a new consumer, from now on

Prints the checkpoint as one JSON object.
"""

SET_HELP = """Move the checkpoint NAME forward to position P.

Says that everything up to P is handled: the commit of a consumer that
manages its own ('evstore tail --checkpoint
NAME --no-commit'). Creates the checkpoint when it does not exist. P is a
position in the store or 'head'.

Refused (exit 2) past the store's head, and backwards (which delivers
events again) unless --force; exit 1 while a consumer runs under NAME
(a --no-commit reader does not count); exit 6 when its file is damaged
(--force overwrites it).

Examples:

\b
    evstore checkpoints set job 1200
    evstore checkpoints set job 800 --force       # deliver 801.. again

Prints the checkpoint as one JSON object.
"""

#: The NAME argument of delete, reset and set.
NameArg = Annotated[str, typer.Argument(
    metavar="NAME", help="The checkpoint's name.", autocompletion=complete_checkpoint)]


def register(app: typer.Typer) -> None:
    cp = typer.Typer(help=CHECKPOINTS_HELP, no_args_is_help=False)

    @cp.callback(invoke_without_command=True)
    def checkpoints(ctx: typer.Context, fmt: FormatOpt = None, wide: WideOpt = False,
                    store: StoreOpt = None) -> None:
        if ctx.invoked_subcommand is None:
            _list(ctx, store, fmt, wide)

    @cp.command("list", help=LIST_HELP)
    def list_(ctx: typer.Context, fmt: FormatOpt = None, wide: WideOpt = False,
              store: StoreOpt = None) -> None:
        _list(ctx, _parent_store(ctx, store), fmt or ctx.parent.params.get("fmt"),
              wide or bool(ctx.parent.params.get("wide")))

    @cp.command("delete", help=DELETE_HELP, no_args_is_help=True)
    def delete(
        ctx: typer.Context,
        name: NameArg,
        store: StoreOpt = None,
    ) -> None:
        from ..features.checkpoints import CheckpointStore

        with open_store(ctx, _parent_store(ctx, store)) as es:
            CheckpointStore(es).delete(name)
        from .common import note

        note(f"deleted checkpoint {name!r}")

    @cp.command("reset", help=RESET_HELP, no_args_is_help=True)
    def reset(
        ctx: typer.Context,
        name: NameArg,
        to: Annotated[str, typer.Option(
            "--to", metavar="P|head", help="The position handled so far: 0 (the beginning), "
                                           "a position, or head.")] = "0",
        store: StoreOpt = None,
    ) -> None:
        from ..features.checkpoints import CheckpointStore
        from ..features.jsonio import dumps

        with open_store(ctx, _parent_store(ctx, store)) as es:
            cp_ = CheckpointStore(es).reset(name, _position(es, to, "--to"))
            sys.stdout.write(dumps(cp_.to_dict(es.head())) + "\n")

    @cp.command("set", help=SET_HELP, no_args_is_help=True)
    def set_(
        ctx: typer.Context,
        name: NameArg,
        position: Annotated[str, typer.Argument(
            metavar="P|head", help="The last position handled.")],
        force: Annotated[bool, typer.Option(
            "--force", help="Also move it backwards (events are delivered again), or over "
                            "a damaged file.")] = False,
        store: StoreOpt = None,
    ) -> None:
        from ..features.checkpoints import CheckpointStore
        from ..features.jsonio import dumps

        with open_store(ctx, _parent_store(ctx, store)) as es:
            cp_ = CheckpointStore(es).set(name, _position(es, position, "P"), force=force)
            sys.stdout.write(dumps(cp_.to_dict(es.head())) + "\n")

    app.add_typer(cp, name="checkpoints")


def _position(es, text: str, what: str) -> int:
    """A position argument: a whole number or 'head'."""
    if text.strip().lower() == "head":
        return es.head()
    if text.strip().isdigit():
        return int(text.strip())
    raise fail(f"invalid {what} {text!r}: a position (0 or more) or head", 2)


def _parent_store(ctx: typer.Context, store):
    """``evstore checkpoints --store X delete NAME`` works as well as
    ``evstore checkpoints delete NAME --store X``."""
    if store is None and ctx.parent is not None:
        store = ctx.parent.params.get("store")
    return store


def _list(ctx: typer.Context, store, fmt, wide: bool = False) -> None:
    from ..features.checkpoints import CheckpointStore

    with open_store(ctx, store) as es:
        head = es.head()
        rows = [c.to_dict(head) for c in CheckpointStore(es).list()]
    fmt_ = pick_format(fmt)
    if fmt_ == "table":
        from .render import dict_table

        for r in rows:
            r["stream"] = "(all)" if r["stream"] is None else r["stream"]
        dict_table(rows, title="checkpoints", wide=wide)
        return
    from ..features.jsonio import Writer
    from .cmd_tail import _closed_pipe_is_fine  # one rule for a closed stdout

    with _closed_pipe_is_fine():
        w = Writer(sys.stdout.buffer, fmt_)
        for r in rows:
            w.write(r)
        w.close()
