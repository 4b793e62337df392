"""Test-only helpers for Billfold."""
