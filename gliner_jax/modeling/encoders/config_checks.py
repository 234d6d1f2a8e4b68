"""Checks every encoder config makes: the attention heads split the model width, and options the module does not
implement are refused by name (NotImplementedError), never silently computed otherwise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_heads(hidden_size: int, num_heads: int) -> None:
    """ValueError unless `num_heads` divides `hidden_size`."""
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) is not a multiple of num_attention_heads ({num_heads})")


def refuse(family: str, refusals: Mapping[str, tuple[bool, str]], source: Mapping[str, Any] | Any) -> None:
    """NotImplementedError for the first option of `refusals` ({key: (refused?, why)}) that is refused, naming its
    value in `source` (a config dict, or a config object's attribute)."""
    for key, (refused, why) in refusals.items():
        if refused:
            value = source.get(key) if isinstance(source, Mapping) else getattr(source, key)
            raise NotImplementedError(f"unsupported {family} config {key}={value!r}: {why}")
