"""Venue registry: name → the codec module's Decoder, Client and ServerSession.

Modules are imported on first use, so a venue whose SDK extra is missing
(``futu``) does not stop the others from working.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from schemas.errors import ConfigError

if TYPE_CHECKING:       # base imports pyarrow; the registry stays light
    from schemas.venues.base import Client, Decoder, ServerSession

NAMES = ("alltick", "finazon", "noren", "hedgetech", "futu")


@dataclass(frozen=True)
class VenueSpec:
    name: str
    decoder: type[Decoder]
    client: type[Client]
    server: type[ServerSession]
    route: Callable[[bytes | str], tuple[str, str] | None]
    credentials: dict[str, str]          # credential key -> environment variable


def get(name: str) -> VenueSpec:
    if name not in NAMES:
        raise ConfigError(f"unknown venue {name!r}: expected one of {', '.join(NAMES)}")
    try:
        mod = importlib.import_module(f"schemas.venues.{name}")
    except ModuleNotFoundError as exc:
        raise ConfigError(f"venue {name!r} is not available: {exc}") from None
    spec: VenueSpec = mod.SPEC
    return spec


def make_decoder(name: str, session: str = "") -> Decoder:
    return get(name).decoder(session)
