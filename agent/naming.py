"""Agent names and label keys, as the inventory, certificates and `agent serve` accept them."""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
NAME_RULE = "names are 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
LABEL_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
RESERVED_NAMES = frozenset({"local"})  # the machine the CLI runs on
MAX_LABELS = 64  # labels one agent may carry
MAX_LABEL_VALUE = 253  # characters of one label's value
