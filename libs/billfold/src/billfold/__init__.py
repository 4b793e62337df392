"""Billfold shared library."""
