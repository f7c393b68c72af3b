"""Process-wide memory setup of a recording process (issue 8: peak RSS ≤ 150 MB).

(``tickrec replay`` and ``tickrec serve`` use two of its parts as well:
``system_pool_first`` and ``skip_pandas_probe``; see ``tickrec.cli``.)

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
  mimalloc): pyarrow's default pool (``set_memory_pool``) and Arrow's own C++
  default, which parts of Arrow use without asking pyarrow (the Parquet writer's
  encoders among them). The C++ default is chosen once,
  from ``ARROW_DEFAULT_MEMORY_POOL``, when pyarrow is imported, so ``lean_process``
  must run before the first ``import pyarrow`` for that part (``tickrec.cli``,
  ``schemas`` and ``recorder`` import it lazily; ``cxx_pool_is_system`` says whether
  it did). Left on mimalloc, that pool held up to 27 MB of a live recorder's peak
  (mimalloc keeps freed pages for reuse). Blocks of
  ``MMAP_THRESHOLD`` bytes or more are mapped on their own, so a batch's large
  temporaries go back to the OS when freed instead of
  staying in the heap as free space between long-lived blocks. Without this
  glibc raises its threshold after the first large free (up to 32 MB) and the
  heap keeps growing with fragments.
- **object-store filesystems**: ``pyarrow.parquet`` imports ``pyarrow.fs``, which
  imports the S3, GCS, Azure and HDFS filesystems (``libarrow_s3`` among them):
  +3.3 MB resident that a recorder on a local root never uses. ``lean_process``
  imports ``pyarrow.fs`` while those four refuse to import, which pyarrow takes as
  "not built with them"; ``storage.fs.s3_filesystem`` imports ``pyarrow.fs`` again,
  whole, before it makes an S3 filesystem, so an ``s3://`` root still works.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import importlib.abc
import os
import sys
from typing import Any

MMAP_THRESHOLD = 1 << 20     # the peak of 256 KB with a third of the page faults
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3      # mallopt parameters (malloc.h)
POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"
CLOUD_FILESYSTEMS = ("pyarrow._s3fs", "pyarrow._gcsfs", "pyarrow._azurefs", "pyarrow._hdfs")


class _Refuse(importlib.abc.MetaPathFinder):
    """Answers every import of the given packages (and their submodules) with
    ModuleNotFoundError."""

    def __init__(self, *names: str) -> None:
        self.names = names

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if any(name == n or name.startswith(n + ".") for n in self.names):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def skip_pandas_probe(*modules: str) -> bool:
    """Make pyarrow settle, once per process, that pandas is not installed; import
    ``modules`` meanwhile (those that look for pandas on import: ``recorder.daemon``
    imports ``pyarrow.dataset``). False (nothing done) when pandas is already imported."""
    if "pandas" in sys.modules:
        return False
    block = _Refuse("pandas")
    sys.meta_path.insert(0, block)
    try:
        import pyarrow as pa
        pa.array([0])           # the first conversion: pyarrow's pandas probe
        for name in modules:
            importlib.import_module(name)
    finally:
        sys.meta_path.remove(block)
    return True


def local_filesystems_first() -> bool:
    """Import ``pyarrow.fs`` without its object-store filesystems (module doc); False
    (nothing done) when it is already imported. ``storage.fs.s3_filesystem`` imports
    them when an S3 root is used."""
    if "pyarrow.fs" in sys.modules:
        return False
    block = _Refuse(*CLOUD_FILESYSTEMS)
    sys.meta_path.insert(0, block)
    try:
        import pyarrow.fs  # noqa: F401
    finally:
        sys.meta_path.remove(block)
    return True


def system_pool_first() -> bool:
    """Make the system pool Arrow's C++ default unless the environment chooses a pool;
    True when it is (or will be, at pyarrow's import). Too late once pyarrow is
    imported: True then only if the environment chose the system pool before."""
    if "pyarrow" not in sys.modules:
        os.environ.setdefault(POOL_ENV, "system")
    return os.environ.get(POOL_ENV) == "system"


def cxx_pool_is_system() -> bool:
    """Whether Arrow's C++ default pool (fixed at pyarrow's import) is the system pool:
    the mimalloc and jemalloc pools, which are that default otherwise, are still unused."""
    import pyarrow as pa
    others = []
    for make in (pa.mimalloc_memory_pool, pa.jemalloc_memory_pool):
        try:
            others.append(make())
        except NotImplementedError:     # not built into this pyarrow
            pass
    return all(p.max_memory() == 0 for p in others)


def tune_allocation() -> bool:
    """Arrow on the system pool, large blocks mapped on their own (module doc). False
    where glibc's ``mallopt`` is not available (the pool is set anyway)."""
    system_pool_first()
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
    """All of the above; call before anything imports pyarrow (the recorder does), or
    name the modules to import here."""
    system_pool_first()
    local_filesystems_first()
    skip_pandas_probe(*modules)
    tune_allocation()
