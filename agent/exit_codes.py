"""Exit codes of every `tlsfleet` command, documented in `--help` and the README."""

OK = 0
PROBLEM = 1  # some vantage saw a problem with the target
USAGE = 2  # bad input or configuration
UNANSWERED = 3  # the target looked fine, but some vantages did not answer
INTERNAL = 70  # a bug: an exception nobody anticipated (EX_SOFTWARE)
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
