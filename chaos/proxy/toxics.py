"""The toxic model: the types this proxy implements, their attributes, and one toxic's settings.

A toxic is immutable; updating one makes a new :class:`Toxic` with the same
name. Type names, attribute names and units are Toxiproxy's:

=============  ==========================================  ===================================
type           attributes                                  effect (see ``behaviour.py``)
=============  ==========================================  ===================================
``latency``    ``latency`` ms, ``jitter`` ms               delay each chunk by latency ± jitter
``bandwidth``  ``rate`` KB/s (0: unlimited)                at most ``rate`` kilobytes a second
``slow_close`` ``delay`` ms                                delay the close by ``delay``
``timeout``    ``timeout`` ms (0: never)                   drop all data; close after timeout
``reset_peer`` ``timeout`` ms                              on the first data, wait, then RST
``slicer``     ``average_size``, ``size_variation`` bytes, split chunks into small pieces,
               ``delay`` µs                                ``delay`` between the pieces
``limit_data`` ``bytes``                                   close once ``bytes`` have passed
``noop``       (none)                                      nothing
=============  ==========================================  ===================================

Validation is stricter than Toxiproxy's (which takes any integer and ignores
unknown attributes): an unknown attribute, a non-integer, a negative value or
one above ``proxy_toxic_attribute_max`` is refused with a 400, and so is a
slicer whose sizes would make it loop (Toxiproxy 2.13 refuses those too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from millpond import limits
from millpond.chaos.proxy import errors

__all__ = ["STREAMS", "TOXIC_TYPES", "Toxic", "ToxicType", "check_name", "new_toxic"]

#: ``upstream`` is client → server, ``downstream`` server → client (Toxiproxy's words).
STREAMS = ("upstream", "downstream")


@dataclass(frozen=True, slots=True)
class ToxicType:
    """A kind of toxic: its name and its integer attributes (all default to 0, as in Go)."""

    name: str
    attributes: tuple[str, ...]

    def attributes_from(self, given: Mapping[str, Any],
                        base: Mapping[str, int] | None = None) -> dict[str, int]:
        """Validate ``given`` over ``base`` (defaults: every attribute 0); return all attributes.

        Raises :class:`~millpond.chaos.proxy.errors.ApiError` (400) for an
        unknown attribute, a value that is not a non-negative integer, a value
        above ``proxy_toxic_attribute_max``, or an inconsistent slicer.
        """
        values = dict(base) if base is not None else dict.fromkeys(self.attributes, 0)
        for key, value in given.items():
            if key not in self.attributes:
                known = ", ".join(self.attributes) or "none"
                raise errors.bad_attribute(f"unknown attribute {key!r} for toxic type {self.name!r} "
                                           f"(known: {known})")
            if value is None:  # JSON null leaves the value as it is, as Go's decoder does
                continue
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise errors.bad_attribute(f"attribute {key!r} must be an integer, got {value!r}")
            if not 0 <= value <= limits.proxy_toxic_attribute_max:
                raise errors.bad_attribute(
                    f"attribute {key!r} must be in 0..{limits.proxy_toxic_attribute_max}, got {value}")
            values[key] = value
        if self.name == "slicer":
            if values["average_size"] < 1:
                raise errors.bad_attribute("slicer average_size must be >= 1")
            if values["size_variation"] > values["average_size"]:
                raise errors.bad_attribute("slicer size_variation must be <= average_size")
        return values


TOXIC_TYPES: Mapping[str, ToxicType] = {
    kind.name: kind
    for kind in (
        ToxicType("latency", ("latency", "jitter")),
        ToxicType("bandwidth", ("rate",)),
        ToxicType("slow_close", ("delay",)),
        ToxicType("timeout", ("timeout",)),
        ToxicType("reset_peer", ("timeout",)),
        ToxicType("slicer", ("average_size", "size_variation", "delay")),
        ToxicType("limit_data", ("bytes",)),
        ToxicType("noop", ()),
    )
}


@dataclass(frozen=True, slots=True)
class Toxic:
    """One toxic on one proxy: ``toxicity`` is the probability (0..1) that it applies to a connection."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: Mapping[str, int] = field(default_factory=dict)

    def updated(self, toxicity: float | None, attributes: Mapping[str, Any]) -> Toxic:
        """A copy with ``toxicity`` (None: unchanged) and ``attributes`` merged over the current ones.

        Raises :class:`~millpond.chaos.proxy.errors.ApiError` (400) as :func:`new_toxic` does.
        """
        kind = TOXIC_TYPES[self.type]
        merged = kind.attributes_from(attributes, base=self.attributes)
        return Toxic(self.name, self.type, self.stream,
                     self.toxicity if toxicity is None else _checked_toxicity(toxicity), merged)

    def to_json(self) -> dict[str, Any]:
        """Toxiproxy's JSON form of a toxic."""
        return {"name": self.name, "type": self.type, "stream": self.stream,
                "toxicity": self.toxicity, "attributes": dict(self.attributes)}


def new_toxic(type_name: str, stream: str, name: str | None, toxicity: float,
              attributes: Mapping[str, Any]) -> Toxic:
    """A validated toxic; ``name`` defaults to ``<type>_<stream>`` and ``stream`` is case-insensitive.

    Raises :class:`~millpond.chaos.proxy.errors.ApiError` (400): a stream other
    than upstream/downstream, an unknown type, a bad attribute, a toxicity
    outside 0..1, an over-long name.
    """
    stream = stream.lower()
    if stream not in STREAMS:
        raise errors.invalid_stream()
    name = name or f"{type_name}_{stream}"
    check_name("toxic", name)
    kind = TOXIC_TYPES.get(type_name)
    if kind is None:
        raise errors.invalid_toxic_type(type_name)
    return Toxic(name, type_name, stream, _checked_toxicity(toxicity), kind.attributes_from(attributes))


def check_name(what: str, name: str) -> None:
    """Refuse (400) a proxy or toxic name that no URL could address: too long, with ``/`` or control bytes."""
    if len(name.encode()) > limits.proxy_name_bytes_max:
        raise errors.bad_request_body(f"{what} name longer than {limits.proxy_name_bytes_max} bytes")
    if "/" in name or any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        raise errors.bad_request_body(f"{what} name {name!r} contains '/' or a control character")


def _checked_toxicity(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise errors.bad_request_body(f"toxicity must be in 0..1, got {value}")
    return float(value)
