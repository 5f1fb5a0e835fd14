"""An anchor line (``relance audit anchor``): one chain as before, or every chain's head (issue 15)."""
from __future__ import annotations

import pytest

from worker.adapters.store.audit import Anchor

H = "a" * 64


def test_a_one_chain_anchor_is_the_line_it_always_was():
    line = {"at": "2024-06-05T08:00:00+00:00", "count": 12, "head_id": 40, "head_hash": H}
    anchor = Anchor.from_json(line)
    assert anchor.as_json() == line and anchor.heads() == {0: (12, 40, H)}


def test_an_anchor_of_several_chains_checks_each_head():
    line = {"at": None, "count": 15, "head_id": 52, "head_hash": "b" * 64,
            "chains": {"0": [12, 40, H], "3": [3, 52, "b" * 64]}}
    anchor = Anchor.from_json(line)
    assert anchor.heads() == {0: (12, 40, H), 3: (3, 52, "b" * 64)}
    assert anchor.as_json() == line


@pytest.mark.parametrize("chains", [{}, [], {"x": [1, 2, H]}, {"1": [1, 2]}, {"1": [-1, 2, H]},
                                    {"1": [1, 2, "court"]}, {"1": ["1", 2, H]}])
def test_a_bad_chain_is_refused(chains):
    with pytest.raises(ValueError):
        Anchor.from_json({"count": 1, "head_id": 1, "head_hash": H, "chains": chains})
