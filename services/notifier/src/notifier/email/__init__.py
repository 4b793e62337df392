"""Emails to customers: rendering (Jinja2 + Babel, en and de) and SMTP."""
