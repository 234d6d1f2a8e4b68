"""Checks every config makes: the attention heads split the model width; options the module does not implement
are refused by name (NotImplementedError), never silently computed otherwise; values have their field's type and
keys are known ones (with a close match suggested for a misspelt one); and the mapping between a Hugging Face config
dict and a config dataclass with an `extra` field that they share."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Collection, Mapping
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


def split_fields(cls: type, hf: Mapping[str, Any], skip: Collection[str] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the values `hf` gives the dataclass `cls`'s fields, the rest of `hf`): its `extra` field and the keys
    `skip` are in neither (`skip` names fields and keys the caller maps itself)."""
    fields = {f.name for f in dataclasses.fields(cls)} - {"extra", *skip}
    values = {key: hf[key] for key in fields if key in hf}
    return values, {key: value for key, value in hf.items() if key not in fields and key not in skip}


def fields_dict(config: Any, skip: Collection[str] = ()) -> dict[str, Any]:
    """A config dataclass as a dict: its `extra`, then its fields but `extra` and `skip`."""
    out = dict(config.extra)
    out.update({f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in {"extra", *skip}})
    return out


def fits(value: Any, hint: Any) -> bool:
    """Whether `value` has the type `hint` names: bool, int, float (an int too), str, None, unions of them, and the
    outer type of tuples (a list too), lists and mappings; anything else (Any, classes) passes."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(fits(value, option) for option in typing.get_args(hint))
    simple = {
        type(None): value is None,
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }
    if hint in simple:
        return simple[hint]
    outer = {tuple: tuple | list, list: list, dict: Mapping, Mapping: Mapping}.get(origin or hint)
    return outer is None or isinstance(value, outer)


def type_name(hint: Any) -> str:
    """A type hint as it reads in Python ("int", "str | None", "tuple[str, ...]")."""
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "").replace("collections.abc.", "")


def check_field_types(values: Mapping[str, Any], cls: type, what: str) -> None:
    """ValueError naming the first of `values` that is a field of dataclass `cls` without its annotated type."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if name in hints and not fits(value, hints[name]):
            raise ValueError(f"{what} {name}={value!r}: expected {type_name(hints[name])}")


def check_known_keys(keys: Collection[str], known: Collection[str], where: str) -> None:
    """ValueError naming the first unknown key, its closest known key if one is close, and every known key."""
    for key in sorted(set(keys) - set(known)):
        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown key {key!r} in {where}{hint}; known: {', '.join(sorted(known))}")
