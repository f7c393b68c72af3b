"""The live side: ``recorder.connect(venue, url=..., symbols=[...])`` and the capture pipeline."""

from __future__ import annotations

from recorder.live import LiveFeed, Recorder, connect

__all__ = ["LiveFeed", "Recorder", "connect"]
