"""Trust on this host: certificate summaries, the trust stores, offline verification, name matching."""
