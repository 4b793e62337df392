"""Signed webhooks to tenant endpoints."""
