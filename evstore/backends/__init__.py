"""Backends: the places a store's events live (see :mod:`evstore.core.backend`).

Each backend is imported only when a store of its kind is opened, so the
command line never pays for a driver it does not use.
"""
