"""The IMAP adapter against a real Dovecot on 127.0.0.1."""

import socket
from dataclasses import replace

import pytest
from imapclient import IMAPClient

from posta.mail import imap
from posta.mail.errors import (
    AuthError,
    FolderGone,
    TimeoutFailure,
    TLSFailure,
    TransientError,
    UnreachableError,
    auth_error_from_text,
)
from posta.mail.imap import ImapSession, check_login
from tests.fixtures.servers import free_port
from tests.mail_samples import raw_message


@pytest.fixture
def user(dovecot):
    return dovecot.add_user("imap", "s3cret-pw")


def test_check_login_ok(dovecot, user):
    assert check_login(dovecot.settings(user)) is None
    assert f"Login: user=<{user}>" in dovecot.log()


def test_wrong_password_is_auth_error(dovecot, user):
    settings = replace(dovecot.settings(user), password="wrong")
    with pytest.raises(AuthError) as info:
        check_login(settings)
    assert info.value.kind == "auth"
    assert info.value.basic_auth_disabled is False
    assert "wrong" not in info.value.detail


def test_password_never_logged(dovecot, user, caplog):
    caplog.set_level("DEBUG")
    check_login(dovecot.settings(user))
    assert caplog.records
    assert "s3cret-pw" not in caplog.text
    assert "s3cret-pw" not in repr(dovecot.settings(user))


def test_closed_port_is_unreachable(dovecot, user):
    settings = replace(dovecot.settings(user), port=free_port())
    with pytest.raises(UnreachableError) as info:
        check_login(settings)
    assert info.value.kind == "unreachable"
    assert isinstance(info.value, TransientError)


def test_tls_to_plain_port_is_tls_failure(dovecot, user):
    settings = replace(dovecot.settings(user), security="ssl")
    with pytest.raises(TLSFailure) as info:
        check_login(settings)
    assert "security setting" in info.value.detail


def test_untrusted_certificate_is_tls_failure(dovecot, user):
    settings = replace(dovecot.settings(user, tls=True), ca_bundle=None)
    with pytest.raises(TLSFailure) as info:
        check_login(settings)
    assert "not trusted" in info.value.detail


def test_certificate_trusted_through_ca_bundle(dovecot, user):
    settings = dovecot.settings(user, tls=True)
    assert settings.port == dovecot.tls_port
    with ImapSession(settings) as session:
        assert session.select("INBOX").exists == 0


def test_starttls_upgrades_plain_port(dovecot, user):
    settings = replace(
        dovecot.settings(user), security="starttls", ca_bundle=dovecot.cert_path
    )
    with ImapSession(settings) as session:
        assert session.select("INBOX").uidvalidity > 0


def test_silent_server_is_timeout():
    with socket.socket() as listener:
        # Accepted by the kernel's backlog but never answered: no greeting.
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        settings = imap.ImapSettings(
            host="127.0.0.1",
            port=listener.getsockname()[1],
            security="none",
            username="nobody",
            password="x",
            timeout=0.5,
        )
        with pytest.raises(TimeoutFailure) as info:
            check_login(settings)
    assert info.value.kind == "timeout"


def test_select_is_one_examine(dovecot, user, caplog, imap_commands):
    for n in range(3):
        dovecot.deliver(user, raw_message(message_id=f"<s{n}@example.test>"))
    with ImapSession(dovecot.settings(user)) as session:
        caplog.clear()
        status = session.select("INBOX")
        assert imap_commands() == ["EXAMINE"]
    assert (status.name, status.exists, status.uidnext) == ("INBOX", 3, 4)
    assert status.uidvalidity > 0


def test_missing_folder_is_folder_gone(dovecot, user):
    with ImapSession(dovecot.settings(user)) as session:
        with pytest.raises(FolderGone) as info:
            session.select("Nope")
    assert info.value.kind == "folder_gone"


def test_fetch_headers_in_one_command(dovecot, user, caplog, imap_commands):
    dovecot.deliver(user, raw_message(subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?= team"))
    dovecot.deliver(
        user,
        raw_message(
            message_id="<m2@example.test>",
            in_reply_to="<task-7@posta.test>",
            references=["<root@posta.test>", "<task-7@posta.test>"],
        ),
    )
    with ImapSession(dovecot.settings(user)) as session:
        session.select("INBOX")
        caplog.clear()
        headers = session.fetch_headers([1, 2])
        assert imap_commands() == ["UID FETCH"]
    assert [h.uid for h in headers] == [1, 2]
    assert headers[0].subject == "Grüße team"
    assert headers[0].from_addr == "ann@example.test"
    assert headers[0].size > 100
    assert headers[1].in_reply_to == "<task-7@posta.test>"
    assert headers[1].references == ["<root@posta.test>", "<task-7@posta.test>"]
    assert headers[1].date.year == 2024


def test_fetch_headers_chunks_large_sets(dovecot, user, caplog, imap_commands):
    for n in range(5):
        dovecot.deliver(user, raw_message(message_id=f"<c{n}@example.test>"))
    with ImapSession(dovecot.settings(user)) as session:
        session.select("INBOX")
        caplog.clear()
        original = imap.HEADER_CHUNK
        imap.HEADER_CHUNK = 2
        try:
            headers = session.fetch_headers(range(1, 6))
        finally:
            imap.HEADER_CHUNK = original
        assert imap_commands() == ["UID FETCH"] * 3
    assert [h.message_id for h in headers] == [f"<c{n}@example.test>" for n in range(5)]


def test_open_range_skips_last_message_below_start(dovecot, user):
    dovecot.deliver(user, raw_message())
    with ImapSession(dovecot.settings(user)) as session:
        session.select("INBOX")
        # "UID FETCH 5:*" matches uid 1 too, as the last message.
        assert session.fetch_headers("5:*") == []
        assert [h.uid for h in session.fetch_headers("1:*")] == [1]


def test_fetch_bodies_batched_and_unseen(dovecot, user, caplog, imap_commands):
    for n in range(5):
        dovecot.deliver(user, raw_message(message_id=f"<b{n}@example.test>"))
    with ImapSession(dovecot.settings(user)) as session:
        session.select("INBOX")
        caplog.clear()
        bodies = list(session.fetch_bodies([5, 1, 3, 2, 4], chunk=2))
        assert imap_commands() == ["UID FETCH"] * 3
    assert [uid for uid, _ in bodies] == [1, 2, 3, 4, 5]
    assert b"Message-ID: <b3@example.test>" in bodies[3][1]
    with IMAPClient("127.0.0.1", dovecot.port, ssl=False) as client:
        client.login(user, "s3cret-pw")
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags([1, 2, 3, 4, 5])
    assert all(b"\\Seen" not in f for f in flags.values())


def test_search_header_finds_message_id(dovecot, user):
    dovecot.deliver(user, raw_message(message_id="<one@example.test>"))
    dovecot.deliver(user, raw_message(message_id="<two@example.test>"))
    with ImapSession(dovecot.settings(user)) as session:
        session.select("INBOX")
        assert session.search_header("Message-ID", "<two@example.test>") == [2]
        assert session.search_header("Message-ID", "<three@example.test>") == []


def test_session_outside_with_block_is_refused(dovecot, user):
    session = ImapSession(dovecot.settings(user))
    with pytest.raises(RuntimeError):
        session.select("INBOX")


@pytest.mark.parametrize(
    ("host", "text"),
    [
        ("smtp.office365.com", "535 5.7.139 Authentication unsuccessful, "
         "SmtpClientAuthentication is disabled for the Tenant."),
        ("smtp.office365.com", "535 5.7.139 Authentication unsuccessful, basic "
         "authentication is disabled."),
        ("outlook.office365.com", "b'[AUTHENTICATIONFAILED] BasicAuthBlocked'"),
        ("outlook.office365.com", "login failed: b'AUTHENTICATE failed.'"),
        ("imap.example.test", "NO Basic authentication is disabled."),
    ],
)  # fmt: skip
def test_basic_auth_disabled_detected(host, text):
    error = auth_error_from_text(text, host)
    assert error.basic_auth_disabled is True
    assert "basic authentication is disabled" in error.detail


def test_plain_wrong_password_elsewhere_is_not_basic_auth():
    error = auth_error_from_text("[AUTHENTICATIONFAILED] LOGIN failed.", "imap.test")
    assert error.basic_auth_disabled is False
