"""Write services of sessions_app, one module per topic (see docs/architecture.md)."""
