"""Counting tokens without a tokenizer: where there is none (config load, the dataset).

3 characters a token is a conservative figure for chat text (English runs ~4, Cyrillic ~3).
Exact counts come from the tokenizer where there is one (twin.core.chat_format).
"""

from __future__ import annotations

import math

CHARS_PER_TOKEN = 3
TURN_OVERHEAD_TOKENS = 6  # role markers and separators a chat template adds per turn


def estimate_tokens(text: str) -> int:
    """A tokenizer-free upper estimate of a turn's tokens (its text and its markers)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) + TURN_OVERHEAD_TOKENS
