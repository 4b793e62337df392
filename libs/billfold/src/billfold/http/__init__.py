"""HTTP plumbing every Billfold service shares: errors, middlewares, health, metrics."""
