"""Vectorised helpers for a codec's columnar fast path (see ``Decoder.feed_batch``).

A fast path accepts, with one anchored regular expression per frame shape (RE2,
matched as a DFA over the whole batch), only frames whose JSON is in a strict
canonical form: fixed keys in a fixed order, no whitespace, no escapes, ASCII
text without JSON punctuation, and plain decimal numbers (no sign, no exponent),
quoted or not. Such a frame, its quotes removed, splits on commas into tokens at
fixed places, so a field is one column of tokens with a fixed key prefix. For
such frames ``json.loads`` and the lenient value parsers give exactly what these
helpers give: a decimal string becomes the correctly rounded double either way,
and the length limits keep every integer inside int64 and every number finite.
Anything else is left to the codec's reference decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# A JSON number or numeric string in plain decimal form (no sign, no exponent).
NUM = r'(?:"\d+(?:\.\d+)?"|(?:0|[1-9]\d*)(?:\.\d+)?)'
# A non-negative JSON integer or a string of digits.
INT = r'(?:"\d+"|0|[1-9]\d*)'
# A string of printable ASCII without quotes, backslashes or ,:{}[]
TEXT = r'"[ !#-+\--9;-Z^-z|~]+"'
MAX_INT_CHARS = 18          # digits: inside int64
MAX_NUM_CHARS = 22          # below 1e22: finite, and the same double either way


def binary_array(payloads: Sequence[bytes]) -> pa.Array:
    """The payloads as one Arrow binary array (one concat, no per-item objects)."""
    offsets = pa.array([0, *accumulate(map(len, payloads))], pa.int32())
    return pa.Array.from_buffers(pa.binary(), len(payloads),
                                 [None, offsets.buffers()[1], pa.py_buffer(b"".join(payloads))])


def tokens(frames: pa.Array, drop: Sequence[tuple[str, str]]) -> tuple[pa.Array, np.ndarray]:
    """Each frame without quotes, ``drop`` replacements applied in order, split on
    commas: (all tokens, each frame's first token index; one more at the end)."""
    text = pc.replace_substring(frames, '"', "")
    for old, new in drop:
        text = pc.replace_substring(text, old, new)
    split = pc.split_pattern(text.cast(pa.string()), ",")
    return split.flatten(), split.offsets.to_numpy().astype(np.int64)


def field(flat: pa.Array, at: np.ndarray, prefix: int, suffix: int = 0) -> pa.Array:
    """The tokens at ``at`` without their first ``prefix`` and last ``suffix`` characters."""
    return pc.utf8_slice_codeunits(flat.take(pa.array(at)), prefix, -suffix if suffix else None)


def fits(values: pa.Array, limit: int) -> np.ndarray:
    """Where each value is at most ``limit`` characters long."""
    lengths: np.ndarray = pc.binary_length(values).to_numpy()
    return lengths <= limit


def constant(value: str, n: int) -> pa.Array:
    """A string column holding ``value`` ``n`` times."""
    data = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets),
                                                  pa.py_buffer(data * n)])


def lists(values: pa.Array, counts: np.ndarray) -> pa.Array:
    """``values`` cut into consecutive lists of ``counts`` items."""
    offsets = np.zeros(len(counts) + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def ranges(starts: np.ndarray, counts: np.ndarray, step: int = 1) -> np.ndarray:
    """``starts[i] + step * k`` for k below ``counts[i]``, for every i, concatenated."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    first = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    k = np.arange(total, dtype=np.int64) - np.repeat(first, counts)
    return np.repeat(starts.astype(np.int64), counts) + step * k
