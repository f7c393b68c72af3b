"""URL helpers shared by the venue clients: credentials in the query, and their removal.

Vendors that take a credential in the URL (AllTick ``token``, Finazon ``apikey``)
dial the full URL but store and log only ``redact_url(url)``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_KEYS = ("token", "apikey", "api_key", "key", "password", "susertoken", "authorization")


def redact_url(url: str, secret_keys: tuple[str, ...] = SECRET_KEYS) -> str:
    """``url`` with the value of every secret query parameter replaced by ``***``."""
    parts = urlsplit(url)
    query = [(k, "***" if k.lower() in secret_keys else v)
             for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    netloc = parts.netloc
    if "@" in netloc:                       # user:password@host
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` set in its query (replacing values of the same keys)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def query_pairs(url: str) -> list[tuple[str, str]]:
    """The query of ``url`` as (key, value) pairs in order, repeated keys kept."""
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def with_pairs(url: str, pairs: list[tuple[str, str]]) -> str:
    """``url`` with its query replaced by ``pairs`` (repeated keys kept, UTF-8 encoded)."""
    return urlunsplit(urlsplit(url)._replace(query=urlencode(pairs)))
