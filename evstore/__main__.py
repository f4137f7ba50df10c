"""``python -m evstore``: the same as the ``evstore`` command."""
from .cli import main

main()
