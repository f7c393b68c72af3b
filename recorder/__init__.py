"""The live side: ``recorder.connect(venue, url=..., symbols=[...])`` and the capture pipeline.

The names below are loaded on first use (PEP 562), so ``recorder.lean`` can set up
the process before pyarrow is first imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recorder.live import LiveFeed, Recorder, connect

__all__ = ["LiveFeed", "Recorder", "connect"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'recorder' has no attribute {name!r}")
    from recorder import live
    return getattr(live, name)
