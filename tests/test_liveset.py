"""The reader's rule for sealed days (storage.liveset): pure, no store needed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from storage.liveset import Replaced, classify, encode_names, merged

RUNS = st.sampled_from(["20240310T000000-hosta-1-abcdef", "20240310T000001-hostb-2-012345"])
NAMES = st.builds(lambda run, n: f"{run}-{n:06d}.parquet", RUNS, st.integers(0, 300))
ODD = st.sampled_from(["x.parquet", "weird-name.parquet", "a-b-c.parquet"])


@given(st.sets(NAMES | ODD, max_size=60), st.lists(NAMES | ODD, max_size=20))
def test_replaced_ranges_hold_exactly_the_names_given(names: set[str], probes: list[str]) -> None:
    enc = encode_names(names)
    rep = Replaced.of({"replaced": enc})
    assert sorted(rep.all_names()) == sorted(names)
    for p in [*names, *probes]:
        assert (p in rep) == (p in names)
    # a day of consecutive files is one range per run, not one entry per name
    if names and all(n.startswith("2024") for n in names):
        assert sum(len(v) for k, v in enc.items() if k != "names") <= len(names)


def test_the_rule_old_new_late_garbage() -> None:
    base = "b/raw/venue=alltick/date=2024-03-10/"
    old = [base + f"r1-{i:06d}.parquet" for i in range(3)]
    sealed = [base + "sealed-s1-000.parquet"]
    # before any manifest: recorder files only; a sealed file nobody names is ignored
    part = classify(old + sealed, None)
    assert part.live == old and part.garbage == sealed
    entry = {"files": [{"path": "raw/venue=alltick/date=2024-03-10/sealed-s1-000.parquet"}],
             "replaced": merged(None, old + sealed)}
    assert "sealed-s1-000.parquet" not in Replaced.of(entry)   # sealed names need no entry
    # after the manifest: the sealed file, not the replaced ones (even before they are deleted)
    late = base + "r1-000003.parquet"
    part = classify(old + sealed + [late, base + "sealed-s0-000.parquet"], entry)
    assert part.live == sealed + [late] and not part.missing
    assert sorted(part.garbage) == sorted(old + [base + "sealed-s0-000.parquet"])
    # a listing older than the manifest lacks the sealed file: the caller lists again
    assert classify(old, entry).missing == ["sealed-s1-000.parquet"]
