"""LiveFeed's root: without one (None or an empty string) the capture goes to a
temporary store that ``__aexit__`` removes."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder.live import LiveFeed

URL = "ws://127.0.0.1:9/"


@pytest.mark.parametrize("root", [None, ""])
async def test_no_root_captures_to_a_temporary_store_removed_on_exit(root: str | None) -> None:
    live = LiveFeed("alltick", URL, ["BTCUSDT"], root)
    assert live._tmp is not None
    where = Path(live._tmp.name)
    assert live.recorder.root == where and where.is_dir()
    await live.__aexit__(None, None, None)
    assert not where.exists()


def test_a_root_is_used_as_given(tmp_path: Path) -> None:
    live = LiveFeed("alltick", URL, ["BTCUSDT"], tmp_path)
    assert live._tmp is None and live.recorder.root == tmp_path
