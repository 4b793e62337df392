"""Customers, read from the Stripe mirror (written by billing-sync)."""
