"""The check line of the store's small JSON files: :mod:`evstore.core.checkline`.

Kept under this name for callers that imported it from here; the rule lives
in ``core`` because the file backend (checkpoints, settings) and the
snapshot feature both use it.
"""
from ..core.checkline import KEY, check_line, seal, unseal  # noqa: F401

__all__ = ["KEY", "check_line", "seal", "unseal"]
