"""worker.adapters.files: a file published whole, once."""
from __future__ import annotations

from worker.adapters.files import create_new


def test_create_new_publishes_once_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "day" / "ORG.txt"
    assert create_new(path, b"premier")
    assert not create_new(path, b"second")
    assert path.read_bytes() == b"premier"
    assert sorted(p.name for p in path.parent.iterdir()) == ["ORG.txt"]
