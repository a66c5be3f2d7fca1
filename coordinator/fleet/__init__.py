"""Whom to ask and how: the inventory, selectors, vantages (local and gRPC), fan-out and clock offsets."""
