"""Sites (tenants): their branding and defaults."""
