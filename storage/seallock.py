"""One seal at a time per store.

Local roots: ``flock`` on ``ROOT/manifests/.seal.lock`` (one host).

Object stores: a lease object ``manifests/.seal-lease.json`` (owner, host, pid,
expiry). A seal writes it, waits ``SETTLE_S``, reads it back and goes on only if
it is still its own; it renews the lease as it goes and deletes it at the end.
A lease held by a process that is gone (same host, pid not alive) or expired is
taken over. pyarrow's S3 filesystem has no conditional write, so two seals that
write the lease within ``SETTLE_S`` of each other could both read back their
own: the lease keeps seals from overlapping in practice (a second `tickrec
compact` or daemon is refused with one line), it is not a consensus protocol.
Run the seal on one host per store (docs/object-store.md).
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Any, Self

from schemas.errors import StoreError
from storage.fs import StoreRoot
from storage.layout import host_name, new_session_id

LEASE_REL = "manifests/.seal-lease.json"
LEASE_S = 3600.0
SETTLE_S = 0.2


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SealLock:
    """Context manager: hold the store's seal lock (see the module doc)."""

    def __init__(self, store: StoreRoot) -> None:
        self.store = store
        self._fh: Any = None
        self.lease: dict[str, Any] = {}

    def __enter__(self) -> Self:
        if not self.store.s3:
            path = self.store.local_path("manifests")
            path.mkdir(parents=True, exist_ok=True)
            self._fh = open(path / ".seal.lock", "w")
            fcntl.flock(self._fh, fcntl.LOCK_EX)
            return self
        held = self.store.read_json(LEASE_REL)
        if held and not self._free(held):
            raise self._busy(held)
        self.lease = {"owner": new_session_id(), "host": host_name(), "pid": os.getpid()}
        self.renew(force=True)
        time.sleep(SETTLE_S)
        held = self.store.read_json(LEASE_REL)
        if not held or held.get("owner") != self.lease["owner"]:
            raise self._busy(held or {})
        return self

    def renew(self, force: bool = False) -> None:
        """Push the lease's expiry ``LEASE_S`` ahead once half of it has passed (object
        stores; ``force``: now)."""
        if not self.store.s3:
            return
        now = time.time_ns()
        if force or int(self.lease.get("expires_ns", 0)) - now < LEASE_S * 1e9 / 2:
            self.lease["expires_ns"] = now + int(LEASE_S * 1e9)
            self.store.write_json(LEASE_REL, self.lease)

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
            return
        held = self.store.read_json(LEASE_REL)
        if held and held.get("owner") == self.lease.get("owner"):
            self.store.delete(LEASE_REL)

    @staticmethod
    def _free(held: dict[str, Any]) -> bool:
        if int(held.get("expires_ns", 0)) < time.time_ns():
            return True
        if held.get("host") == host_name():
            pid = int(held.get("pid", 0))
            return pid == os.getpid() or not _alive(pid)
        return False

    def _busy(self, held: dict[str, Any]) -> StoreError:
        return StoreError(f"another seal is running on {self.store.uri} (host "
                          f"{held.get('host', '?')}, pid {held.get('pid', '?')}); "
                          f"its lease {LEASE_REL} expires within {LEASE_S / 60:.0f} minutes")
