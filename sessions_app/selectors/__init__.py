"""Read selectors of sessions_app, one module per topic; they return plain data."""
