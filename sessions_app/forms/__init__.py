"""Console forms of sessions_app, one module per topic, with the same limits as the API."""
