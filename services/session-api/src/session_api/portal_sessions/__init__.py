"""Portal sessions: short-lived links into the customer portal."""
