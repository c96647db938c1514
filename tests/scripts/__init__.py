"""The project's scripts run as a person runs them (scripts/smoke_page.py against a real app)."""
