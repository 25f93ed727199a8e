"""Support sessions, actions, prompts and the transcript (built in the sessions issues)."""
