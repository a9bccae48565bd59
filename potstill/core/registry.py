"""Registries of methods, models and datasets.

Each entry has a name and a ``Config`` dataclass. In a recipe an entry is chosen with
``{name: ..., <Config fields>}``; :meth:`Registry.parse` checks the fields strictly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from .config import ConfigError, from_dict, to_dict


@dataclass
class Spec:
    """A chosen registry entry and its checked config."""

    name: str
    config: Any

    def to_dict(self) -> dict:
        return {"name": self.name, **to_dict(self.config)}


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._configs: dict[str, type] = {}

    def register(self, name: str, config: type | None = None) -> Callable:
        """Decorator. ``config`` defaults to the object's ``Config`` attribute."""

        def deco(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            cfg = config or getattr(obj, "Config", None)
            if cfg is None or not dataclasses.is_dataclass(cfg):
                raise TypeError(f"{self.kind} {name!r} needs a Config dataclass")
            self._entries[name] = obj
            self._configs[name] = cfg
            return obj

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str, key: str | None = None):
        if name not in self._entries:
            where = f"{key}: " if key else ""
            raise ConfigError(f"{where}unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self._entries[name]

    def config_cls(self, name: str) -> type:
        self.get(name)
        return self._configs[name]

    def parse(self, node: Any, key: str) -> Spec:
        """``{name: x, **fields}`` (or just ``"x"``) -> :class:`Spec` with a checked config."""
        if isinstance(node, Spec):
            return node
        if isinstance(node, str):
            node = {"name": node}
        if not isinstance(node, dict) or "name" not in node:
            raise ConfigError(
                f"{key}: expected a mapping with 'name' (one of: {', '.join(self.names())}), got {node!r}")
        fields = {k: v for k, v in node.items() if k != "name"}
        name = node["name"]
        self.get(name, f"{key}.name")
        return Spec(name, from_dict(self._configs[name], fields, key))


METHODS = Registry("method")
MODELS = Registry("model")
DATASETS = Registry("dataset")
