"""analyzer.places.Places: rid → place as the dict {rid: p for p, rid in enumerate(rids)} gives it, held
as arrays (a week's rids in a dict cost ~90 bytes a request)."""
from __future__ import annotations

import random

import pytest

from analyzer import places
from analyzer.places import Places


def as_dict(rids: list[str]) -> dict[str, int]:
    return {rid: p for p, rid in enumerate(rids)}


@pytest.mark.parametrize("block", [7, 1 << 15])
@pytest.mark.parametrize("same_hash", [False, True])
def test_places_give_what_the_dict_gives(monkeypatch, same_hash, block):
    """``block``: rids hashed and keys compared at a time (7: runs of one hash across blocks' edges)."""
    monkeypatch.setattr(places, "_BLOCK", block)
    if same_hash:  # every rid of a length shares one hash: each lookup checks the rid itself
        monkeypatch.setattr(places, "hash", len, raising=False)
    rng = random.Random(7)
    rids = [f"b1/m/{rng.randrange(10**6)}/{k}" for k in range(500)]
    rids += [rids[3], rids[40], "b1/zz", rids[3]]  # repeated rids: the last place, listed once
    got, want = Places(rids), as_dict(rids)
    assert len(got) == len(want) and list(got) == list(want)
    assert all(got[rid] == p for rid, p in want.items())
    for missing in ("b1/m/none", "", "b1/m/1", 5, None):
        assert missing not in got
        with pytest.raises(KeyError):
            got[missing]
    assert dict(got) == want and got.get("nope", -1) == -1


def test_no_rids():
    assert len(Places([])) == 0 and list(Places([])) == [] and "a" not in Places([])
