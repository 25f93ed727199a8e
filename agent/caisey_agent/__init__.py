"""Caisey endpoint agent. Imports nothing from Django; shares only ``protocol`` with the server."""

__version__ = "0.1.0"
