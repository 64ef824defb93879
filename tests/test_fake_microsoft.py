"""The Microsoft fake answers in the shapes Microsoft documents."""

import base64
import hashlib
import secrets
import threading
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

USER = "ada@contoso.test"
SCOPES = ("offline_access", "User.Read", "Mail.ReadWrite")
AAD_ERROR_KEYS = {
    "error",
    "error_description",
    "error_codes",
    "timestamp",
    "trace_id",
    "correlation_id",
}


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _authorize_url(fake, challenge: str, state: str = "st4te", **extra) -> str:
    params = {
        "client_id": fake.client_id,
        "response_type": "code",
        "redirect_uri": fake.redirect_uris[0],
        "scope": " ".join(SCOPES),
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return f"{fake.authorize_url}?{urlencode(params)}"


def _query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _redeem(fake, code: str, verifier: str) -> requests.Response:
    return requests.post(
        fake.token_url,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": fake.redirect_uris[0],
            "code_verifier": verifier,
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
        },
        timeout=5,
    )


def _refresh(fake, refresh_token: str) -> requests.Response:
    return requests.post(
        fake.token_url,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(fake.client_id, fake.client_secret),
        timeout=5,
    )


def _get(fake, path: str, token: str, **headers) -> requests.Response:
    headers["Authorization"] = f"Bearer {token}"
    return requests.get(f"{fake.graph_url}/{path}", headers=headers, timeout=5)


def _code(fake, verifier_challenge) -> str:
    location = fake.consent(_authorize_url(fake, verifier_challenge[1]))
    return _query(location)["code"]


def test_code_flow_with_pkce_issues_tokens_that_open_graph(fake_microsoft):
    fake_microsoft.add_user(USER, "Ada Lovelace")
    verifier, challenge = _pkce()
    page = requests.get(_authorize_url(fake_microsoft, challenge), timeout=5)
    assert 'id="accept"' in page.text and 'id="cancel"' in page.text
    assert USER in page.text

    location = fake_microsoft.consent(_authorize_url(fake_microsoft, challenge))
    params = _query(location)
    assert location.startswith(fake_microsoft.redirect_uris[0])
    assert params["state"] == "st4te" and params["code"]

    token = _redeem(fake_microsoft, params["code"], verifier).json()
    assert token["token_type"] == "Bearer"
    assert token["refresh_token"] and token["expires_in"] == 3599
    # Microsoft grants offline_access but never lists it in the scope.
    assert "offline_access" not in token["scope"].split()
    me = _get(fake_microsoft, "me", token["access_token"]).json()
    assert me["mail"] == USER and me["displayName"] == "Ada Lovelace"


def test_wrong_verifier_is_invalid_grant_with_aadsts_shape(fake_microsoft):
    fake_microsoft.add_user(USER)
    code = _code(fake_microsoft, _pkce())
    response = _redeem(fake_microsoft, code, "not-the-verifier-" + "x" * 40)
    body = response.json()
    assert response.status_code == 400
    assert set(body) == AAD_ERROR_KEYS
    assert body["error"] == "invalid_grant" and body["error_codes"] == [501481]
    assert body["error_description"].startswith("AADSTS501481:")


def test_codes_are_single_use_and_short_lived(fake_microsoft):
    fake_microsoft.add_user(USER)
    pair = _pkce()
    code = _code(fake_microsoft, pair)
    assert _redeem(fake_microsoft, code, pair[0]).status_code == 200
    again = _redeem(fake_microsoft, code, pair[0]).json()
    assert again["error"] == "invalid_grant" and again["error_codes"] == [54005]

    fake_microsoft.code_ttl = -1
    stale = _code(fake_microsoft, pair)
    expired = _redeem(fake_microsoft, stale, pair[0]).json()
    assert expired["error_codes"] == [70008]


def test_cancel_redirects_with_access_denied(fake_microsoft):
    fake_microsoft.add_user(USER)
    url = _authorize_url(fake_microsoft, _pkce()[1])
    params = _query(fake_microsoft.consent(url, accept=False))
    assert params["error"] == "access_denied" and params["state"] == "st4te"
    assert params["error_description"].startswith("AADSTS65004")
    assert "code" not in params


def test_scripted_authorize_error_redirects_back(fake_microsoft):
    fake_microsoft.add_user(USER)
    fake_microsoft.fail_next_authorize(65001)
    url = _authorize_url(fake_microsoft, _pkce()[1])
    params = _query(fake_microsoft.consent(url))
    assert params["error"] == "consent_required"
    assert params["error_description"].startswith("AADSTS65001")
    # Only the next request fails.
    assert "code" in _query(fake_microsoft.consent(url))


def test_unregistered_redirect_uri_is_not_followed(fake_microsoft):
    fake_microsoft.add_user(USER)
    url = _authorize_url(
        fake_microsoft, _pkce()[1], redirect_uri="http://127.0.0.1/evil"
    )
    response = requests.get(url, allow_redirects=False, timeout=5)
    assert response.status_code == 400 and "AADSTS50011" in response.text


def test_wrong_client_secret_is_invalid_client(fake_microsoft):
    fake_microsoft.add_user(USER)
    token = fake_microsoft.grant(USER)
    response = requests.post(
        fake_microsoft.token_url,
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        auth=(fake_microsoft.client_id, "wrong"),
        timeout=5,
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_refresh_tokens_rotate_and_can_be_revoked(fake_microsoft):
    fake_microsoft.add_user(USER)
    first = fake_microsoft.grant(USER)
    second = _refresh(fake_microsoft, first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert _get(fake_microsoft, "me", second["access_token"]).status_code == 200
    reused = _refresh(fake_microsoft, first["refresh_token"]).json()
    assert reused["error"] == "invalid_grant"

    fake_microsoft.revoke_refresh_tokens(USER)
    revoked = _refresh(fake_microsoft, second["refresh_token"]).json()
    assert revoked["error"] == "invalid_grant" and revoked["error_codes"] == [50173]


def test_scripted_token_errors(fake_microsoft):
    fake_microsoft.add_user(USER)
    token = fake_microsoft.grant(USER)
    fake_microsoft.fail_next_token(700082)
    fake_microsoft.fail_next_token(50076)
    expired = _refresh(fake_microsoft, token["refresh_token"]).json()
    mfa = _refresh(fake_microsoft, token["refresh_token"]).json()
    assert expired["error"] == "invalid_grant" and expired["error_codes"] == [700082]
    assert mfa["error"] == "interaction_required"
    assert "refresh_token" in _refresh(fake_microsoft, token["refresh_token"]).json()


def test_no_refresh_token_without_offline_access(fake_microsoft):
    fake_microsoft.add_user(USER)
    fake_microsoft.grant_offline_access = False
    assert "refresh_token" not in fake_microsoft.grant(USER)
    fake_microsoft.grant_offline_access = True
    assert "refresh_token" not in fake_microsoft.grant(USER, ("User.Read",))


def test_graph_answers_401_for_missing_bad_and_expired_tokens(fake_microsoft):
    fake_microsoft.add_user(USER)
    token = fake_microsoft.grant(USER)["access_token"]
    missing = requests.get(f"{fake_microsoft.graph_url}/me", timeout=5)
    bad = _get(fake_microsoft, "me", "garbage")
    fake_microsoft.expire_access_tokens()
    expired = _get(fake_microsoft, "me", token)
    for response in (missing, bad, expired):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
        assert "request-id" in response.json()["error"]["innerError"]
    assert "expired" in expired.json()["error"]["message"]


def test_personal_accounts_have_short_ids_and_no_mail(fake_microsoft):
    fake_microsoft.add_user("bob@outlook.test", "Bob", personal=True)
    token = fake_microsoft.grant("bob@outlook.test")["access_token"]
    me = _get(fake_microsoft, "me", token).json()
    assert len(me["id"]) == 16 and me["mail"] is None
    assert me["userPrincipalName"] == "bob@outlook.test"


def _delta(fake, token, url=None, page_size=10, select="subject"):
    url = (
        url
        or f"{fake.graph_url}/me/mailFolders('Inbox')/messages/delta?$select={select}"
    )
    response = requests.get(
        url,
        headers={
            "Authorization": f"Bearer {token}",
            "Prefer": f"odata.maxpagesize={page_size}",
        },
        timeout=5,
    )
    return response


def test_delta_pages_with_next_links_then_a_delta_link(fake_microsoft):
    fake_microsoft.add_user(USER)
    token = fake_microsoft.grant(USER)["access_token"]
    for n in range(25):
        fake_microsoft.deliver(USER, subject=f"m{n}")
    pages, url = [], None
    while True:
        body = _delta(fake_microsoft, token, url).json()
        pages.append(body)
        url = body.get("@odata.nextLink")
        if not url:
            break
    assert [len(p["value"]) for p in pages] == [10, 10, 5]
    assert "$skiptoken=" in pages[0]["@odata.nextLink"]
    assert "$deltatoken=" in pages[-1]["@odata.deltaLink"]
    subjects = [m["subject"] for p in pages for m in p["value"]]
    assert subjects == [f"m{n}" for n in range(25)]
    assert set(pages[0]["value"][0]) == {"@odata.type", "@odata.etag", "id", "subject"}

    delta_link = pages[-1]["@odata.deltaLink"]
    idle = _delta(fake_microsoft, token, delta_link).json()
    assert idle["value"] == [] and "@odata.deltaLink" in idle
    new_id = fake_microsoft.deliver(USER, subject="late")
    fake_microsoft.delete_message(USER, pages[0]["value"][0]["id"])
    changes = _delta(fake_microsoft, token, idle["@odata.deltaLink"]).json()["value"]
    assert [c["id"] for c in changes if "@removed" not in c] == [new_id]
    assert [c["@removed"] for c in changes if "@removed" in c] == [
        {"reason": "deleted"}
    ]


def test_headers_come_only_when_selected(fake_microsoft):
    fake_microsoft.add_user(USER)
    token = fake_microsoft.grant(USER)["access_token"]
    fake_microsoft.deliver(USER, subject="hi", in_reply_to="<a@x.test>")
    plain = _delta(fake_microsoft, token, select="subject,body").json()["value"][0]
    full = _delta(
        fake_microsoft, token, select="subject,internetMessageHeaders"
    ).json()["value"][0]
    assert "internetMessageHeaders" not in plain
    names = {h["name"]: h["value"] for h in full["internetMessageHeaders"]}
    assert names["In-Reply-To"] == "<a@x.test>"


def test_expired_delta_tokens_answer_410(fake_microsoft):
    fake_microsoft.add_user(USER)
    token = fake_microsoft.grant(USER)["access_token"]
    fake_microsoft.deliver(USER, subject="one")
    link = _delta(fake_microsoft, token).json()["@odata.deltaLink"]
    fake_microsoft.expire_delta_tokens()
    gone = _delta(fake_microsoft, token, link)
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "SyncStateNotFound"


def test_more_than_four_in_flight_get_429_with_retry_after(fake_microsoft):
    fake_microsoft.add_user(USER)
    token = fake_microsoft.grant(USER)["access_token"]
    fake_microsoft.latency = 0.3
    fake_microsoft.limits(max_in_flight=4, retry_after=0.5)
    barrier = threading.Barrier(6)
    responses = []

    def call():
        barrier.wait()
        responses.append(_get(fake_microsoft, "me", token))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    throttled = [r for r in responses if r.status_code == 429]
    assert len([r for r in responses if r.status_code == 200]) == 4
    assert len(throttled) == 2
    assert throttled[0].headers["Retry-After"] == "0.5"
    assert throttled[0].json()["error"]["code"] == "ApplicationThrottled"
    # The sixth arrived while five were in flight (one of them being refused).
    assert fake_microsoft.max_in_flight_seen[USER] == 5


def test_request_budget_and_scripted_503(fake_microsoft):
    fake_microsoft.add_user(USER)
    token = fake_microsoft.grant(USER)["access_token"]
    fake_microsoft.limits(budget=2, window=60, retry_after=0.1)
    statuses = [_get(fake_microsoft, "me", token).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    fake_microsoft.limits()
    fake_microsoft.fail_next_graph(503, retry_after=0.2)
    unavailable = _get(fake_microsoft, "me", token)
    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "0.2"
    assert _get(fake_microsoft, "me", token).status_code == 200
    assert [r.status for r in fake_microsoft.requests[-5:]] == [
        200,
        200,
        429,
        503,
        200,
    ]


def _post(fake, path, token, body) -> requests.Response:
    return requests.post(
        f"{fake.graph_url}/{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )


def test_send_mail_saves_to_sent_items_and_records_headers(fake_microsoft):
    fake_microsoft.add_user(USER)
    token = fake_microsoft.grant(USER)["access_token"]
    message = {
        "subject": "Hello",
        "body": {"contentType": "Text", "content": "Hi there"},
        "toRecipients": [{"emailAddress": {"address": "bob@example.test"}}],
        "internetMessageId": "<abc@posta.test>",
        "internetMessageHeaders": [{"name": "X-Posta-Task", "value": "42"}],
    }
    response = _post(fake_microsoft, "me/sendMail", token, {"message": message})
    assert response.status_code == 202 and response.content == b""
    sent = fake_microsoft.sent[0]
    assert sent.headers["Message-ID"] == "<abc@posta.test>"
    assert sent.headers["X-Posta-Task"] == "42"
    assert [m["subject"] for m in fake_microsoft.folder(USER, "sentitems")] == ["Hello"]


def test_only_x_headers_may_be_set(fake_microsoft):
    fake_microsoft.add_user(USER)
    token = fake_microsoft.grant(USER)["access_token"]
    message = {
        "subject": "Re",
        "toRecipients": [{"emailAddress": {"address": "bob@example.test"}}],
        "internetMessageHeaders": [{"name": "In-Reply-To", "value": "<a@b>"}],
    }
    response = _post(fake_microsoft, "me/sendMail", token, {"message": message})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidInternetMessageHeader"
    assert fake_microsoft.sent == []


def test_upload_session_takes_ordered_byte_ranges(fake_microsoft):
    fake_microsoft.add_user(USER)
    token = fake_microsoft.grant(USER)["access_token"]
    draft = _post(fake_microsoft, "me/messages", token, {"subject": "big"}).json()
    data = secrets.token_bytes(1000)
    session = _post(
        fake_microsoft,
        f"me/messages/{draft['id']}/attachments/createUploadSession",
        token,
        {"AttachmentItem": {"attachmentType": "file", "name": "a.bin", "size": 1000}},
    )
    assert session.status_code == 201
    upload_url = session.json()["uploadUrl"]
    assert session.json()["nextExpectedRanges"] == ["0-"]

    def put(start, end, auth=None):
        headers = {"Content-Range": f"bytes {start}-{end}/1000"}
        if auth:
            headers["Authorization"] = auth
        return requests.put(
            upload_url, data=data[start : end + 1], headers=headers, timeout=5
        )

    assert put(0, 599, auth=f"Bearer {token}").status_code == 401
    first = put(0, 599)
    assert first.status_code == 200
    assert first.json()["nextExpectedRanges"] == ["600"]
    assert put(700, 999).status_code == 416
    last = put(600, 999)
    assert last.status_code == 201 and "/attachments('" in last.headers["Location"]
    attachments = _get(
        fake_microsoft, f"me/messages/{draft['id']}/attachments", token
    ).json()["value"]
    assert base64.b64decode(attachments[0]["contentBytes"]) == data


def test_contacts_page_with_next_links(fake_microsoft):
    fake_microsoft.add_user(USER)
    token = fake_microsoft.grant(USER)["access_token"]
    for n in range(15):
        fake_microsoft.add_contact(USER, f"Contact {n}", f"c{n}@example.test")
    first = _get(fake_microsoft, "me/contacts?$top=10", token).json()
    assert len(first["value"]) == 10
    second = requests.get(
        first["@odata.nextLink"],
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    ).json()
    assert len(second["value"]) == 5 and "@odata.nextLink" not in second
