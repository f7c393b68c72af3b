"""Process-wide memory setup of a recording process (issue 8: peak RSS ≤ 150 MB).

``tickrec record`` and ``tickrec daemon`` call ``lean_process()`` first, before the
recorder modules are imported. It changes state of the whole process, so the
library never calls it on its own; a program embedding ``Recorder`` may.

- **pandas**: pyarrow looks for pandas on its first Python → Arrow conversion (and
  ``pyarrow.dataset`` on import) and imports it when it is installed: +36 MB
  resident (+52 MB with ``pyarrow.dataset``) that a recorder never uses. pandas is
  not a tickrec dependency but comes with the test extras and with ``futu-api``.
  ``lean_process`` refuses the import while pyarrow looks, so pyarrow takes the
  path it takes when pandas is not installed, and allows it again after: pandas
  still imports, and DataFrames/Series still convert (through the Arrow C data
  interfaces pandas implements).
- **allocation**: Arrow's buffers come from the C allocator (the system pool, not
  mimalloc), and blocks of ``MMAP_THRESHOLD`` bytes or more are mapped on their
  own, so a batch's large temporaries go back to the OS when freed instead of
  staying in the heap as free space between long-lived blocks. Without this
  glibc raises its threshold after the first large free (up to 32 MB) and the
  heap keeps growing with fragments.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import importlib.abc
import sys
from typing import Any

MMAP_THRESHOLD = 1 << 20     # the peak of 256 KB with a third of the page faults
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3      # mallopt parameters (malloc.h)


class _NoPandas(importlib.abc.MetaPathFinder):
    """Answers every import of pandas with ModuleNotFoundError."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def skip_pandas_probe(*modules: str) -> bool:
    """Make pyarrow settle, once per process, that pandas is not installed; import
    ``modules`` meanwhile (those that look for pandas on import: ``recorder.daemon``
    imports ``pyarrow.dataset``). False (nothing done) when pandas is already imported."""
    if "pandas" in sys.modules:
        return False
    block = _NoPandas()
    sys.meta_path.insert(0, block)
    try:
        import pyarrow as pa
        pa.array([0])           # the first conversion: pyarrow's pandas probe
        for name in modules:
            importlib.import_module(name)
    finally:
        sys.meta_path.remove(block)
    return True


def tune_allocation() -> bool:
    """Arrow on the system pool, large blocks mapped on their own (module doc). False
    where glibc's ``mallopt`` is not available (the pool is set anyway)."""
    import pyarrow as pa
    pa.set_memory_pool(pa.system_memory_pool())
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, MMAP_THRESHOLD))


def lean_process(*modules: str) -> None:
    """Both of the above; call before importing the recorder (it imports pyarrow), or
    name the modules to import here."""
    skip_pandas_probe(*modules)
    tune_allocation()
