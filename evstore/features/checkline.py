"""The check line that ends the store's small JSON files: now
:mod:`evstore.disk.checkline`, one layer down, so that the file backend
(which keeps the forgetting documents) uses the same helper as snapshots,
checkpoints and the settings.  Kept here for the feature modules' imports."""
from ..disk.checkline import KEY, check_line, seal, unseal  # noqa: F401
