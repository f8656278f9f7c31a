"""The Redis keys the client shares across the fleet (the pipeline's own are in ``tasks.names``)."""

from __future__ import annotations

TOKEN_PREFIX = "plaud:token:"  # + a hash of (client, user): sealed partner and user tokens
TX_BUDGET_PREFIX = "plaud:budget:tx:"  # + client id: the Transcription API budget's window, wait lists, grants


def tx_budget_key(client_id: str) -> str:
    """Where the fleet's Transcription API budget for one Plaud client lives."""
    return TX_BUDGET_PREFIX + client_id


def text(value: bytes | str) -> str:
    """A Redis reply as text: bytes from a client made without ``decode_responses``, else as it is."""
    return value.decode() if isinstance(value, bytes) else value
