"""The SMTP adapter against a real aiosmtpd server on 127.0.0.1."""

import socket
from dataclasses import replace

import pytest

from posta.mail.compose import OutgoingMail, build_message, recipients
from posta.mail.errors import (
    AmbiguousSendError,
    AuthError,
    PermanentSendError,
    TimeoutFailure,
    TLSFailure,
    TransientError,
    UnreachableError,
)
from posta.mail.smtp import SmtpSettings, check_login, send
from tests.fixtures.servers import free_port


def outgoing(**changes) -> OutgoingMail:
    fields = {
        "from_addr": "team@posta.test",
        "from_name": "Posta Team",
        "to": ["Ann <ann@example.test>"],
        "cc": ["cc@example.test"],
        "bcc": ["hidden@example.test"],
        "subject": "Task 7: status",
        "text": "All done.\n.leading dot line\n",
        "message_id": "<out-1@posta.test>",
    }
    return OutgoingMail(**(fields | changes))


def test_check_login_ok(smtp):
    assert check_login(smtp.settings(smtp.user)) is None


def test_wrong_password_is_auth_error(smtp):
    with pytest.raises(AuthError) as info:
        check_login(replace(smtp.settings(smtp.user), password="nope"))
    assert info.value.kind == "auth"
    assert info.value.basic_auth_disabled is False


def test_microsoft_basic_auth_disabled_reply(smtp):
    smtp.reject_next(
        535,
        "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is "
        "disabled for the Tenant.",
        stage="AUTH",
    )
    with pytest.raises(AuthError) as info:
        check_login(smtp.settings(smtp.user))
    assert info.value.basic_auth_disabled is True


def test_send_delivers_once_with_bcc_in_envelope_only(smtp):
    mail = outgoing()
    send(
        smtp.settings(smtp.user), mail.from_addr, recipients(mail), build_message(mail)
    )
    assert len(smtp.messages) == 1
    mail_from, rcpt_tos, raw = smtp.messages[0]
    assert mail_from == "team@posta.test"
    assert rcpt_tos == ["ann@example.test", "cc@example.test", "hidden@example.test"]
    assert b"hidden@example.test" not in raw
    assert b"\nBcc:" not in raw
    assert b"Message-ID: <out-1@posta.test>" in raw
    # Dot-stuffing round-trips: the line still starts with a single dot.
    assert b"\r\n.leading dot line\r\n" in raw


def test_server_down_is_transient(smtp):
    smtp.stop()
    try:
        with pytest.raises(TransientError) as info:
            send(smtp.settings(smtp.user), "a@posta.test", ["b@example.test"], b"x")
    finally:
        smtp.start()
    assert isinstance(info.value, UnreachableError)
    assert smtp.messages == []


def test_closed_port_is_unreachable():
    settings = SmtpSettings("127.0.0.1", free_port(), "none", "u", "p")
    with pytest.raises(UnreachableError):
        check_login(settings)


def test_all_recipients_refused_is_permanent(smtp):
    smtp.reject_next(550, "5.1.1 No such user", stage="RCPT")
    with pytest.raises(PermanentSendError) as info:
        send(smtp.settings(smtp.user), "a@posta.test", ["gone@example.test"], b"x")
    assert "5.1.1" in info.value.detail
    assert info.value.kind == "rejected"
    assert smtp.messages == []


def test_one_recipient_refused_still_sends_to_the_others(smtp):
    smtp.reject_next(550, "5.1.1 No such user", stage="RCPT")
    raw = build_message(outgoing(cc=[], bcc=["ok@example.test"]))
    send(smtp.settings(smtp.user), "a@posta.test", ["gone@x.test", "ok@x.test"], raw)
    assert [rcpts for _, rcpts, _ in smtp.messages] == [["ok@x.test"]]


def test_rejected_at_end_of_data_is_permanent(smtp):
    smtp.reject_next(550, "5.7.1 Message content rejected")
    with pytest.raises(PermanentSendError) as info:
        send(smtp.settings(smtp.user), "a@posta.test", ["b@example.test"], b"x")
    assert "content rejected" in info.value.detail
    assert smtp.messages == []


def test_temporary_sender_refusal_is_transient(smtp):
    smtp.reject_next(451, "4.3.0 Try again later", stage="MAIL")
    with pytest.raises(TransientError) as info:
        send(smtp.settings(smtp.user), "a@posta.test", ["b@example.test"], b"x")
    assert info.value.kind == "transient"
    assert smtp.messages == []


def test_connection_lost_after_data_is_ambiguous(smtp):
    smtp.drop_after_data()
    with pytest.raises(AmbiguousSendError) as info:
        send(smtp.settings(smtp.user), "a@posta.test", ["b@example.test"], b"x\r\n")
    assert info.value.kind == "unknown"
    # The server did receive it: exactly why a blind retry could send it twice.
    assert len(smtp.messages) == 1


def test_tls_to_plain_port_is_tls_failure(smtp):
    with pytest.raises(TLSFailure):
        check_login(replace(smtp.settings(smtp.user), security="ssl"))


def test_starttls_not_offered_is_tls_failure(smtp):
    with pytest.raises(TLSFailure) as info:
        check_login(replace(smtp.settings(smtp.user), security="starttls"))
    assert "STARTTLS" in info.value.detail


def test_silent_server_is_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        settings = SmtpSettings("127.0.0.1", port, "none", "u", "p", timeout=0.5)
        with pytest.raises(TimeoutFailure):
            check_login(settings)


def test_no_recipients_is_permanent(smtp):
    with pytest.raises(PermanentSendError):
        send(smtp.settings(smtp.user), "a@posta.test", [], b"x")
    assert smtp.messages == []


def test_password_not_in_settings_repr(smtp):
    settings = smtp.settings(smtp.user)
    assert settings.password not in repr(settings)
