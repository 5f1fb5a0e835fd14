"""worker.adapters.files: a file published whole, once; private; never through a link."""
from __future__ import annotations

import datetime as dt
import os
import stat

import pytest

from worker.adapters import files
from worker.adapters.channels.base import OutgoingMessage
from worker.adapters.channels.local import LocalEmailChannel, LocalLetterChannel, LocalSmsChannel
from worker.adapters.files import create_new


def test_create_new_publishes_once_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "day" / "ORG.txt"
    assert create_new(path, b"premier")
    assert not create_new(path, b"second")
    assert path.read_bytes() == b"premier"
    assert sorted(p.name for p in path.parent.iterdir()) == ["ORG.txt"]


# --- private files, no links followed (issue 11) -------------------------------------------------------------

def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path, follow_symlinks=False).st_mode)


@pytest.fixture
def loose_umask():
    """A permissive umask, as a shell's: the modes must not depend on it."""
    old = os.umask(0o000)
    yield
    os.umask(old)


def _message(**extra) -> OutgoingMessage:
    fields = {f: None for f in OutgoingMessage.__dataclass_fields__}
    fields.update(message_id=7, reference="RL-000001-0000007", channel="letter", step="invitation_1",
                  organisation="CDAS-REDON", case_reference="RL-000001", to="+33612345678",
                  text="Bonjour Alix Testeur", html="<p>Bonjour Alix Testeur</p>", subject="RSA",
                  sender_name="CDAS", postage="simple", extra={"day": "2024-06-03"})
    fields.update(extra)
    return OutgoingMessage(**{k: v for k, v in fields.items() if k in OutgoingMessage.__dataclass_fields__})


def test_files_holding_personal_data_are_not_world_readable(tmp_path, loose_umask):
    """Before: letters, outbox logs and digests were written 0644 (0666 & ~umask)."""
    assert files.create_new(tmp_path / "digests" / "ORG.txt", b"digest")
    assert _mode(tmp_path / "digests" / "ORG.txt") == 0o640
    temp = files.write_temp(tmp_path, b"x", ".pdf")
    assert _mode(temp) == 0o600 and temp.name.startswith(".tmp-") and len(temp.name) > 12
    LocalSmsChannel(tmp_path / "outbox").send(_message(channel="sms"))
    LocalEmailChannel(tmp_path / "outbox").send(_message(channel="email"))
    delivery = LocalLetterChannel(tmp_path / "letters").send(_message())
    assert _mode(tmp_path / "outbox" / "sms.jsonl") == 0o600
    assert _mode(tmp_path / "outbox" / "email.jsonl") == 0o600
    letter = tmp_path / "letters" / delivery.provider_ref
    assert letter.read_text(encoding="utf-8") == "<p>Bonjour Alix Testeur</p>"
    assert _mode(letter) == 0o640
    assert not [p for p in letter.parent.iterdir() if p != letter]  # no temporary file left


def test_an_existing_outbox_log_is_made_private(tmp_path, loose_umask):
    log = tmp_path / "outbox" / "sms.jsonl"
    log.parent.mkdir()
    log.write_text("", encoding="utf-8")
    os.chmod(log, 0o644)
    LocalSmsChannel(tmp_path / "outbox").send(_message(channel="sms"))
    assert _mode(log) == 0o600


def test_a_link_planted_at_the_letters_temporary_name_is_not_followed(tmp_path):
    """Before: the letter went to ``<target>.tmp`` (a predictable name) through whatever link was there."""
    secret = tmp_path / "elsewhere" / "authorized_keys"
    secret.parent.mkdir()
    secret.write_text("ssh-ed25519 AAAA ops\n", encoding="utf-8")
    folder = tmp_path / "letters" / "2024-06-03"
    folder.mkdir(parents=True)
    (folder / "RL-000001-0000007_invitation_1_simple.tmp").symlink_to(secret)
    (folder / "RL-000001-0000007_invitation_1_simple.html").symlink_to(secret)
    LocalLetterChannel(tmp_path / "letters").send(_message())
    assert secret.read_text(encoding="utf-8") == "ssh-ed25519 AAAA ops\n"
    target = folder / "RL-000001-0000007_invitation_1_simple.html"
    assert not target.is_symlink() and "Alix" in target.read_text(encoding="utf-8")


def test_a_linked_day_folder_in_the_letters_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "letters").mkdir()
    (tmp_path / "letters" / "2024-06-03").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(files.SymlinkError, match="lien symbolique"):
        LocalLetterChannel(tmp_path / "letters").send(_message())
    assert list(elsewhere.iterdir()) == []


def test_a_linked_outbox_log_is_refused(tmp_path):
    elsewhere = tmp_path / "shadow"
    elsewhere.write_text("root:x\n", encoding="utf-8")
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "sms.jsonl").symlink_to(elsewhere)
    with pytest.raises(files.SymlinkError):
        LocalSmsChannel(tmp_path / "outbox").send(_message(channel="sms"))
    assert elsewhere.read_text(encoding="utf-8") == "root:x\n"
    with pytest.raises(OSError):  # the descriptor itself: O_NOFOLLOW
        files._open_locked_append(tmp_path / "outbox" / "sms.jsonl", 0o600)


def test_rewrite_lines_keeps_the_mode_and_the_others(tmp_path):
    log = tmp_path / "email.jsonl"
    for ref in ("A", "B", "C"):
        files.append_line(log, f'{{"reference": "{ref}"}}')
    assert files.rewrite_lines(log, lambda line: '"B"' not in line) == 1
    assert log.read_text(encoding="utf-8").splitlines() == ['{"reference": "A"}', '{"reference": "C"}']
    assert _mode(log) == 0o600
    files.append_line(log, '{"reference": "D"}')  # appends go on to the new file
    assert log.read_text(encoding="utf-8").count("\n") == 3
    assert files.rewrite_lines(tmp_path / "absent.jsonl", lambda line: False) == 0


def test_settle_and_remove_older_than(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    old, new = done / "old.csv", done / "new.csv"
    for p in (old, new):
        p.write_text("nir\n", encoding="utf-8")
        os.chmod(p, 0o644)
    now = dt.datetime(2024, 6, 10, 12, tzinfo=dt.timezone.utc)
    files.settle(old, now - dt.timedelta(days=8))
    files.settle(new, now - dt.timedelta(days=2))
    assert _mode(old) == _mode(new) == 0o600
    target = tmp_path / "keep.txt"
    target.write_text("x", encoding="utf-8")
    (done / "link").symlink_to(target)
    os.utime(done / "link", (0, 0), follow_symlinks=False)
    assert files.remove_older_than(done, now - dt.timedelta(days=7)) == 2  # old.csv and the link
    assert sorted(p.name for p in done.iterdir()) == ["new.csv"] and target.exists()


def test_remove_day_dirs_never_follows_a_link(tmp_path):
    root = tmp_path / "print"
    for day in ("2022-01-03", "2024-06-03"):
        (root / day).mkdir(parents=True)
        (root / day / "ORG_simple.pdf").write_bytes(b"%PDF")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "file").write_text("x", encoding="utf-8")
    (root / "2022-01-03" / "link").symlink_to(precious, target_is_directory=True)
    (root / "2021-05-05").symlink_to(precious, target_is_directory=True)
    (root / "README").write_text("x", encoding="utf-8")
    assert files.remove_day_dirs(root, dt.date(2023, 1, 1)) == 2
    assert sorted(p.name for p in root.iterdir()) == ["2024-06-03", "README"]
    assert (precious / "file").exists()


def test_safe_dir_refuses_odd_names(tmp_path):
    for name in ("..", "a/b", ""):
        with pytest.raises(ValueError):
            files.safe_dir(tmp_path, name)
    assert files.safe_dir(tmp_path, "2024-06-03").is_dir()


def test_read_nofollow_refuses_a_link_swapped_in_after_the_check(tmp_path):
    import errno

    from worker.adapters.files import read_nofollow

    secret = tmp_path / "secret"
    secret.write_text("NIR")
    flux = tmp_path / "flux.csv"
    flux.write_text("a,b\n")
    assert read_nofollow(flux) == b"a,b\n"
    flux.unlink()
    flux.symlink_to(secret)  # swapped between the inbox's check and the read
    with pytest.raises(OSError) as exc:
        read_nofollow(flux)
    assert exc.value.errno == errno.ELOOP
