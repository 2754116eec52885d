"""Persistence: the ``Store`` contract and its SQLite implementation."""
