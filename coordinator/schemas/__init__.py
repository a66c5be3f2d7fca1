"""The JSON Schema of each JSON document kind tlsfleet writes (agent/documents.py names the kinds)."""
