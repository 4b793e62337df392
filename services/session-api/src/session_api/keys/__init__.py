"""API keys: secret keys for tenant backends, publishable keys for the drop-in script."""
