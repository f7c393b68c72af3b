"""Where a store lives: a local directory or ``s3://bucket/prefix`` (pyarrow filesystems).

``StoreRoot.parse(text)`` is the one place that tells the two apart. It gives a
pyarrow ``FileSystem`` and a base path in it, plus the few operations the store
needs, so callers never build S3 paths by hand:

- ``join(*parts)``: a path under the root (``/``-separated, filesystem-relative);
- ``list_parquet(table, venue=None, date=None)``: every published ``*.parquet``
  file of a table (hidden ``.…`` temp names never), found with one recursive
  listing;
- ``parquet_files(table, venue=None)``: the files a reader reads. Object stores:
  ``list_parquet`` filtered by the day's seal manifest (``storage.liveset``: the
  switch of a seal is its manifest write, there being no rename); local roots:
  every published file (the local seal switches by renames);
- ``write_parquet(table, rel)``: publish one whole file. Local: hidden temp,
  fsync, rename (``storage.atomic``). S3: one object write: an S3 object
  appears only when its upload completes, so a reader never sees half a file,
  and no temp/rename is needed (S3 has no rename);
- ``upload(local, rel)``: publish a local file whole at ``rel`` (one object on S3);
- ``read_json(rel)``, ``write_json(rel, obj)`` (one whole object / an atomic replace);
- ``exists(rel)``, ``delete(rel)``.

S3 connection settings come from the usual environment variables:
``AWS_ENDPOINT_URL_S3`` (else ``AWS_ENDPOINT_URL``; ``http://`` endpoints use
plain HTTP), ``AWS_REGION`` (else ``AWS_DEFAULT_REGION``, else ``us-east-1``),
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` (else
pyarrow's default credential chain).

The write-ahead journal never goes to S3: it needs appends and fsync. For an S3
root it lives in a local directory: ``--journal DIR``, else ``$TICKREC_JOURNAL``,
else ``~/.cache/tickrec/journal/<bucket>/<prefix>`` (``journal_root``).
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from schemas.errors import ConfigError
from storage.atomic import PARQUET_OPTIONS, encoding_options
from storage.atomic import write_json as write_json_local
from storage.atomic import write_parquet as write_parquet_local

S3_PREFIX = "s3://"


def is_s3(text: str | os.PathLike[str]) -> bool:
    return isinstance(text, str) and text.startswith(S3_PREFIX)


def s3_filesystem() -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem configured from the AWS_* environment variables."""
    if "S3FileSystem" not in vars(pafs):
        # imported without its object-store filesystems (recorder.lean): now whole
        importlib.reload(pafs)
    env = os.environ
    kw: dict[str, object] = {
        "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        url = urlparse(endpoint if "://" in endpoint else "https://" + endpoint)
        kw["endpoint_override"] = url.netloc + url.path.rstrip("/")
        kw["scheme"] = url.scheme or "https"
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        kw["access_key"] = env["AWS_ACCESS_KEY_ID"]
        kw["secret_key"] = env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            kw["session_token"] = env["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**kw)


@dataclass(frozen=True)
class StoreRoot:
    """A store root: ``fs`` + ``base`` (a path in ``fs``), as given by ``uri``."""
    uri: str
    fs: pafs.FileSystem
    base: str
    s3: bool
    journal: Path          # local directory holding ``journal/<feed>/…``

    @classmethod
    def parse(cls, text: str | os.PathLike[str], journal: str | os.PathLike[str] | None = None,
              ) -> StoreRoot:
        """``s3://bucket[/prefix]`` or a local path (kept as given, not resolved)."""
        if isinstance(text, StoreRoot):
            return text
        if is_s3(text):
            assert isinstance(text, str)
            rest = text[len(S3_PREFIX):].rstrip("/")
            bucket, _, prefix = rest.partition("/")
            if not bucket or "/" in bucket:
                raise ConfigError(f"store root {text!r}: no bucket (expected s3://bucket/prefix)")
            prefix = "/".join(p for p in prefix.split("/") if p)
            if any(p in (".", "..") for p in prefix.split("/")):
                raise ConfigError(f"store root {text!r}: '.' and '..' are not allowed")
            base = f"{bucket}/{prefix}" if prefix else bucket
            return cls(f"{S3_PREFIX}{base}", s3_filesystem(), base, True,
                       journal_root(bucket, prefix, journal))
        path = Path(text)
        return cls(str(path), pafs.LocalFileSystem(), path.as_posix(), False,
                   Path(journal) if journal else path)

    # -- paths -------------------------------------------------------------------------
    def join(self, *parts: str) -> str:
        return "/".join([self.base.rstrip("/"), *(p.strip("/") for p in parts if p)])

    def local_path(self, *parts: str) -> Path:
        """The local path of ``parts`` (local roots only)."""
        assert not self.s3
        return Path(self.base, *parts)

    def __str__(self) -> str:
        return self.uri

    # -- listing -----------------------------------------------------------------------
    def list_parquet(self, table: str, venue: str | None = None,
                     date: str | None = None) -> list[str]:
        """Every published ``*.parquet`` file under ``table/`` (or one venue, one date), sorted."""
        parts = [table] + ([f"venue={venue}"] if venue else []) + \
            ([f"date={date}"] if venue and date else [])
        sel = pafs.FileSelector(self.join(*parts), recursive=True, allow_not_found=True)
        return sorted(i.path for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                      and not i.base_name.startswith("."))

    def parquet_files(self, table: str, venue: str | None = None,
                      manifests: Any = None) -> list[str]:
        """The files a reader reads under ``table/`` (or ``table/venue=V/``), sorted.

        Object stores apply the seal manifests (``storage.liveset.live_files``;
        ``manifests`` may share a ``liveset.Manifests`` between tables)."""
        if not self.s3:
            return self.list_parquet(table, venue)
        from storage.liveset import live_files
        return live_files(self, table, venue, manifests)

    def exists(self, rel: str) -> bool:
        return bool(self.fs.get_file_info(self.join(rel)).type != pafs.FileType.NotFound)

    def is_store(self) -> bool:
        """Whether the root exists (S3: the bucket is reachable; a prefix needs no object)."""
        if not self.s3:
            return Path(self.base).is_dir()
        bucket = self.base.split("/", 1)[0]
        return bool(self.fs.get_file_info(bucket).type == pafs.FileType.Directory)

    def read_json(self, rel: str) -> Any:
        """The JSON object stored at ``rel``; None when there is none."""
        from storage.liveset import read_json_fs
        return read_json_fs(self.fs, self.join(rel))

    def write_json(self, rel: str, obj: Any) -> None:
        """Store ``obj`` at ``rel`` whole: one object write (S3), an atomic replace (local)."""
        if not self.s3:
            write_json_local(self.local_path(rel), obj)
            return
        data = json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8")
        with self.fs.open_output_stream(self.join(rel)) as out:
            out.write(data)

    def upload(self, local: Path, rel: str) -> str:
        """Publish the local file ``local`` at ``rel`` as one object (S3 only).

        The file is memory-mapped and handed over in one write call, so no
        Python-level interruption can close the upload half-way (pyarrow
        completes an upload on close); a killed process leaves an incomplete
        multipart upload, which no listing shows."""
        assert self.s3
        path = self.join(rel)
        with pa.memory_map(str(local)) as src:
            data = src.read_buffer()
        with self.fs.open_output_stream(path) as out:
            out.write(data)
        return path

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.join(rel))
        except FileNotFoundError:
            pass

    # -- writing -----------------------------------------------------------------------
    def write_parquet(self, table: pa.Table, rel: str) -> str:
        """Publish ``table`` whole at ``rel``; a reader sees all of it or nothing."""
        if not self.s3:
            return str(write_parquet_local(table, self.local_path(rel)))
        path = self.join(rel)
        # The whole file is built in memory first, then sent as one object: a
        # failure while encoding uploads nothing, and the object appears only
        # when its upload completes (S3 never shows a partial object).
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, **PARQUET_OPTIONS, **encoding_options(table.schema))
        data = buf.getvalue()
        with self.fs.open_output_stream(path) as out:
            out.write(data)
        return f"{S3_PREFIX}{path}"


def journal_root(bucket: str, prefix: str, given: str | os.PathLike[str] | None = None) -> Path:
    """The local directory holding the journal of an S3 root (see the module doc)."""
    if given:
        return Path(given)
    if os.environ.get("TICKREC_JOURNAL"):
        return Path(os.environ["TICKREC_JOURNAL"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base.joinpath("tickrec", "journal", bucket, *[p for p in prefix.split("/") if p])


def as_store(root: StoreRoot | str | os.PathLike[str]) -> StoreRoot:
    return root if isinstance(root, StoreRoot) else StoreRoot.parse(root)


__all__ = ["StoreRoot", "as_store", "is_s3", "journal_root", "s3_filesystem"]
