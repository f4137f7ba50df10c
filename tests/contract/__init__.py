"""The contract suite: every backend held to the same behaviour (a package, so its conftest never shadows tests/conftest.py)."""
