"""Which files of a partition are live, once its day has a seal manifest.

A seal writes new files named ``sealed-<seal>-NNN.parquet`` beside the old ones,
then one manifest per date (``manifests/date=<D>/manifest.json``) naming, per
(table, venue), the sealed files that hold the partition now (``files``) and
every file name those replace (``replaced``: the recorder files and older sealed
files it merged, cumulatively over all seals of the day). Only then are the
replaced files deleted. On an object store (no rename) the manifest write is
the switch, so a reader applies this rule to what it lists:

- a ``sealed-*`` file is read only if the manifest names it (a sealed file it
  does not name is a seal in progress or an older seal's leftover);
- a recorder file (``<run>-<n>.parquet``) is read unless the manifest says it
  was replaced: a file the manifest neither names nor replaces was published
  after the seal (a recovery or a late recorder writing into a sealed day);
- no manifest entry for the partition: every recorder file, no sealed file.

``classify`` applies it; ``missing`` (files the manifest names that the listing
lacks) means the listing is older than the manifest: list again.

``replaced`` is kept as ranges per name prefix (``{"<prefix>|<digits>":
[[lo, hi], ...]}``): a day of 30-second files is a few ranges per run, not
thousands of names.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

SEALED = "sealed-"
_NUMBERED = re.compile(r"^(.+)-(\d+)\.parquet$")


def manifest_rel(date: str) -> str:
    return f"manifests/date={date}/manifest.json"


def base_name(path: str | os.PathLike[str]) -> str:
    return os.fspath(path).replace(os.sep, "/").rsplit("/", 1)[-1]


def is_sealed(name: str) -> bool:
    return base_name(name).startswith(SEALED)


# -- the replaced set ----------------------------------------------------------------------
def encode_names(names: Iterable[str]) -> dict[str, Any]:
    """File names as ``{"<prefix>|<width>": [[lo, hi], ...], "names": [other names]}``."""
    nums: dict[str, set[int]] = {}
    other: set[str] = set()
    for name in names:
        m = _NUMBERED.match(base_name(name))
        if m:
            nums.setdefault(f"{m[1]}|{len(m[2])}", set()).add(int(m[2]))
        else:
            other.add(base_name(name))
    out: dict[str, Any] = {}
    for key, values in sorted(nums.items()):
        ranges: list[list[int]] = []
        for v in sorted(values):
            if ranges and ranges[-1][1] == v - 1:
                ranges[-1][1] = v
            else:
                ranges.append([v, v])
        out[key] = ranges
    if other:
        out["names"] = sorted(other)
    return out


@dataclass(frozen=True)
class Replaced:
    """Membership test over an ``encode_names`` value."""
    ranges: dict[str, list[list[int]]] = field(default_factory=dict)
    names: frozenset[str] = frozenset()

    @classmethod
    def of(cls, entry: dict[str, Any] | None) -> Replaced:
        enc = dict((entry or {}).get("replaced") or {})
        names = frozenset(enc.pop("names", []))
        return cls(enc, names)

    def __contains__(self, name: str) -> bool:
        name = base_name(name)
        if name in self.names:
            return True
        m = _NUMBERED.match(name)
        if not m:
            return False
        n = int(m[2])
        return any(lo <= n <= hi for lo, hi in self.ranges.get(f"{m[1]}|{len(m[2])}", ()))

    def all_names(self) -> list[str]:
        out = list(self.names)
        for key, ranges in self.ranges.items():
            prefix, width = key.rsplit("|", 1)
            out += [f"{prefix}-{n:0{int(width)}d}.parquet" for lo, hi in ranges
                    for n in range(lo, hi + 1)]
        return out


def merged(entry: dict[str, Any] | None, consumed: Iterable[str]) -> dict[str, Any]:
    """The ``replaced`` of a new seal: the old entry's, plus the recorder files it
    consumed (sealed files need no entry: one the manifest does not name is dead)."""
    return encode_names([*Replaced.of(entry).all_names(),
                         *(base_name(p) for p in consumed if not is_sealed(p))])


# -- the rule --------------------------------------------------------------------------------
@dataclass
class Partition:
    live: list[str]          # what a reader reads
    garbage: list[str]       # replaced, or sealed but not named: a seal deletes them
    missing: list[str]       # named by the manifest, not in the listing


def entry_of(manifest: dict[str, Any] | None, table: str, venue: str) -> dict[str, Any] | None:
    got: dict[str, Any] | None = (((manifest or {}).get("tables") or {}).get(table) or {}).get(venue)
    return got


def classify(paths: list[str], entry: dict[str, Any] | None) -> Partition:
    """Split one partition's listed files by the rule in the module doc."""
    if entry is None:
        return Partition([p for p in paths if not is_sealed(p)],
                         [p for p in paths if is_sealed(p)], [])
    named = {base_name(f["path"]) for f in entry.get("files", [])}
    replaced = Replaced.of(entry)
    live, garbage = [], []
    for p in paths:
        name = base_name(p)
        if name in named or (not is_sealed(name) and name not in replaced):
            live.append(p)
        else:
            garbage.append(p)
    listed = {base_name(p) for p in paths}
    return Partition(live, garbage, sorted(named - listed))


# -- manifests, read through a store's filesystem ----------------------------------------------
class Manifests:
    """The day manifests of a store, read on demand and kept for one reader pass."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._got: dict[str, dict[str, Any] | None] = {}

    def get(self, date: str, fresh: bool = False) -> dict[str, Any] | None:
        if fresh or date not in self._got:
            self._got[date] = self.store.read_json(manifest_rel(date))
        return self._got[date]

    def prefetch(self, dates: Iterable[str]) -> None:
        """Read several manifests at once (object stores: one GET each, in parallel)."""
        todo = sorted(set(dates) - set(self._got))
        if len(todo) < 2:
            for d in todo:
                self.get(d)
            return
        with ThreadPoolExecutor(max_workers=min(16, len(todo))) as pool:
            for d, m in zip(todo, pool.map(lambda d: self.store.read_json(manifest_rel(d)), todo)):
                self._got[d] = m


def partition_of(path: str) -> tuple[str, str] | None:
    """(venue, date) of ``…/venue=<v>/date=<d>/<file>``."""
    parts = path.rsplit("/", 3)
    if len(parts) < 4 or not parts[1].startswith("venue=") or not parts[2].startswith("date="):
        return None
    return parts[1][6:], parts[2][5:]


def live_files(store: Any, table: str, venue: str | None = None,
               manifests: Manifests | None = None, tries: int = 4) -> list[str]:
    """The files a reader reads of ``table`` (one venue or all), by the rule above.

    Lists first and reads the manifests after (only of days that hold a sealed
    file), so a manifest is never older than the listing; a manifest newer than
    the listing names files the listing lacks, and that partition is listed
    again. Raises ``StoreError`` if the manifest keeps naming missing files."""
    from schemas.errors import StoreError
    manifests = manifests or Manifests(store)
    parts: dict[tuple[str, str], list[str]] = {}
    for path in store.list_parquet(table, venue):
        key = partition_of(path)
        if key is not None:
            parts.setdefault(key, []).append(path)
    sealed_days = {d for (v, d), paths in parts.items() if any(map(is_sealed, paths))}
    manifests.prefetch(sealed_days)
    out: list[str] = []
    for (v, d), paths in sorted(parts.items()):
        if d not in sealed_days:
            out += paths
            continue
        for attempt in range(tries):
            part = classify(paths, entry_of(manifests.get(d, fresh=attempt > 0), table, v))
            if not part.missing:
                break
            paths = store.list_parquet(table, v, d)
        else:
            raise StoreError(f"{table}/venue={v}/date={d}: the seal manifest names "
                             f"{len(part.missing)} file(s) that are not in the store "
                             f"(e.g. {part.missing[0]}); run tickrec verify")
        out += part.live
    return sorted(out)


def read_json_fs(fs: pafs.FileSystem, path: str) -> Any:
    """A JSON object stored at ``path`` of ``fs``; None when there is none."""
    try:
        with fs.open_input_stream(path) as fh:
            return json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        return None
