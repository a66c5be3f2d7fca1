"""The `tlsfleet` command line: one module per command group, and the console rendering."""
