"""One probe from this host: parse the target, resolve it, handshake with every address, judge the chain."""
