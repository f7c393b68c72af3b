"""The protobuf classes shipped by the official ``futu-api`` package, loaded quietly.

The generated modules live in ``futu/common/pb/`` and import each other as
top-level modules (``import Common_pb2``); the SDK puts that folder on
``sys.path`` itself. Importing them as ``futu.common.pb.X_pb2`` would first run
``futu/__init__.py``, which imports pandas (most of a second), creates a log
folder under ``$HOME`` and, in the main thread, replaces the SIGINT handler with
one that calls ``os._exit(0)`` — a recorder stopped by Ctrl-C would then lose
its last flush. So the same files are loaded here the way the SDK's own pb
modules load each other, without running the package's ``__init__``. The
classes are the very ones the SDK uses (protobuf keeps one class per message
descriptor), so messages pass freely between this codec and the SDK.

Raises ``ModuleNotFoundError`` (one line, with the install hint) when the
package is missing; the venue registry turns that into a ``ConfigError``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_spec = importlib.util.find_spec("futu")
if _spec is None or not _spec.submodule_search_locations:
    raise ModuleNotFoundError("futu-api is not installed (pip install 'tickrec[futu]')")
PB_DIR = Path(next(iter(_spec.submodule_search_locations))) / "common" / "pb"
if not (PB_DIR / "Qot_UpdateTicker_pb2.py").is_file():
    raise ModuleNotFoundError(f"futu-api has no protobuf modules in {PB_DIR}")
if str(PB_DIR) not in sys.path:
    sys.path.append(str(PB_DIR))


def _load(name: str) -> ModuleType:
    return importlib.import_module(name)


Common_pb2 = _load("Common_pb2")
Qot_Common_pb2 = _load("Qot_Common_pb2")
InitConnect_pb2 = _load("InitConnect_pb2")
KeepAlive_pb2 = _load("KeepAlive_pb2")
GetGlobalState_pb2 = _load("GetGlobalState_pb2")
Notify_pb2 = _load("Notify_pb2")
Qot_Sub_pb2 = _load("Qot_Sub_pb2")
Qot_RegQotPush_pb2 = _load("Qot_RegQotPush_pb2")
Qot_UpdateTicker_pb2 = _load("Qot_UpdateTicker_pb2")
