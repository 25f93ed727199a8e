"""Exports of a reviewed record: the client's PDF (pdf.py) and the MSP's JSON with its manifest (json.py)."""
