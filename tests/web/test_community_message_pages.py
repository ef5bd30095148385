"""Messages and moderation through the real app on both backends (cookies, CSRF, origin): two
members talk, the contact-details step, a report reaches the moderator alone, the operator (by
token or by session) and the moderator cannot read the conversation; the JSON face likewise."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from medvault.auth import accounts, totp
from medvault.community import members
from medvault.db import unit_of_work
from medvault.records import service
from tests.helpers import open_vault
from tests.web.support import add_authenticator, new_account

PASSWORD = "a long and private passphrase"
BASE = "https://testserver"
FORM = {"Content-Type": "application/x-www-form-urlencoded", "Origin": BASE}
NEIGHBOUR = "Shall we swap slow-cooker recipes?"
REPORTED = "You are pathetic and everyone in this group laughs at you"
PHONE_TEXT = "Text me on 0612 345 678 tonight"


def _account(env: Any, login: str, role: str, **link: str) -> tuple[str, str | None]:
    """(account id, TOTP secret for the roles that need one)."""
    account_id = new_account(env, login=login, password=PASSWORD, role=role, **link)
    return account_id, add_authenticator(env, account_id) if role in accounts.MFA_REQUIRED else None


def _signed_in(app: Any, login: str, secret: str | None = None) -> TestClient:
    client = TestClient(app, base_url=BASE)
    code = totp.totp_code(secret=secret, step=totp.time_step(datetime.now(UTC))) if secret else ""
    done = client.post(
        "/login",
        content=urlencode({"login": login, "password": PASSWORD, "code": code}),
        headers=FORM,
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    return client


def _csrf(client: TestClient, path: str = "/community/messages") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def _post(client: TestClient, path: str, **fields: str) -> Any:
    return client.post(path, content=urlencode(fields), headers=FORM, follow_redirects=False)


@pytest.fixture
def community(vault_env: Any) -> Any:
    from medvault.api.app import create_app

    env = vault_env
    with open_vault(env) as v:
        pids = [service.create(vault=v, resource={"resourceType": "Patient", "gender": "other"}).rid for _ in range(2)]
    ann_id, _ = _account(env, "ann@example.org", "patient", patient_id=pids[0])
    bob_id, _ = _account(env, "bob@example.org", "patient", patient_id=pids[1])
    _mod_id, mod_secret = _account(env, "mod@example.org", "moderator")
    _admin_id, admin_secret = _account(env, "root@example.org", "admin")
    app = create_app(env.settings)
    ann, bob = _signed_in(app, "ann@example.org"), _signed_in(app, "bob@example.org")
    for client in (ann, bob):
        assert client.get("/community/messages").status_code == 200  # joins on first visit
    with unit_of_work(env.factory) as session:
        ann_member = members.by_account(session=session, crypto=env.crypto, account_id=ann_id)
        bob_member = members.by_account(session=session, crypto=env.crypto, account_id=bob_id)
    assert ann_member is not None
    assert bob_member is not None
    return {
        "env": env,
        "app": app,
        "ann": ann,
        "bob": bob,
        "ann_handle": ann_member.id,
        "bob_handle": bob_member.id,
        "mod": lambda: _signed_in(app, "mod@example.org", mod_secret),
        "admin": lambda: _signed_in(app, "root@example.org", admin_secret),
    }


def _conversation(c: dict[str, Any]) -> tuple[str, str]:
    """Ann writes to Bob twice (one message to be reported); returns (conversation id, csrf)."""
    ann = c["ann"]
    csrf = _csrf(ann)
    opened = _post(ann, "/community/messages", csrf=csrf, member=c["bob_handle"])
    assert opened.status_code == 303
    conv = opened.headers["location"].rsplit("/", 1)[1]
    for text in (NEIGHBOUR, REPORTED):
        assert _post(ann, f"/community/messages/{conv}", csrf=csrf, text=text).status_code == 303
    return conv, csrf


def test_members_talk_and_contact_details_need_a_second_step(community: Any) -> None:
    c = community
    ann, bob = c["ann"], c["bob"]
    conv, csrf = _conversation(c)
    warned = _post(ann, f"/community/messages/{conv}", csrf=csrf, text=PHONE_TEXT)
    assert warned.status_code == 200
    assert "Think before you share" in warned.text
    assert "<mark" in warned.text
    assert re.search(r"<mark[^>]*>0612 345", warned.text)  # the finding is marked in the draft
    assert "Send anyway" in warned.text
    listing = bob.get("/community/messages").text
    assert "2 unread" in listing  # the warned message was not sent
    sent = _post(ann, f"/community/messages/{conv}", csrf=csrf, text=PHONE_TEXT, confirm="yes")
    assert sent.status_code == 303
    thread = bob.get(f"/community/messages/{conv}")
    assert thread.status_code == 200
    for text in (NEIGHBOUR, REPORTED, PHONE_TEXT):
        assert text in thread.text
    assert thread.text.count("/community/report?kind=message") == 3  # one per message received
    assert "unread" not in bob.get("/community/messages").text  # read now
    # Mute, then block: the controls on the list.
    bob_csrf = _csrf(bob)
    assert _post(bob, f"/community/messages/{conv}/mute", csrf=bob_csrf, muted="yes").status_code == 303
    _post(ann, f"/community/messages/{conv}", csrf=csrf, text="are you there?")
    listing = bob.get("/community/messages").text
    assert "(muted)" in listing
    assert "unread" not in listing
    assert (
        _post(bob, "/community/messages/block", csrf=bob_csrf, member=c["ann_handle"], block="yes").status_code == 303
    )
    # L3: to ann, bob's conversation is now exactly an unknown one: same status, same page
    refused = _post(ann, f"/community/messages/{conv}", csrf=csrf, text="hello?")
    unknown = _post(ann, f"/community/messages/{'f' * 24}", csrf=csrf, text="hello?")
    assert refused.status_code == unknown.status_code == 404
    assert refused.text == unknown.text
    assert "does not take messages" not in refused.text
    assert ann.get(f"/community/messages/{conv}").text == ann.get(f"/community/messages/{'f' * 24}").text
    assert c["bob_handle"] not in ann.get("/community/messages").text  # the blocker is out of ann's list
    # Forms without the CSRF token or from another origin are refused.
    assert _post(ann, f"/community/messages/{conv}", text="no token").status_code == 403
    cross = ann.post(
        f"/community/messages/{conv}",
        content=urlencode({"csrf": csrf, "text": "x"}),
        headers={**FORM, "Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert cross.status_code == 403


def test_a_reported_message_reaches_the_moderator_alone(community: Any) -> None:
    c = community
    ann, bob = c["ann"], c["bob"]
    conv, _csrf_ann = _conversation(c)
    thread = bob.get(f"/community/messages/{conv}").text
    links = re.findall(r'href="(/community/report\?kind=message&amp;id=[0-9a-f]+)"', thread)
    assert len(links) == 2
    report_form = bob.get(links[1].replace("&amp;", "&"))
    assert report_form.status_code == 200
    assert "alone" in report_form.text
    message_id = links[1].rsplit("=", 1)[1]
    bob_csrf = _csrf(bob)
    filed = _post(bob, "/community/report", csrf=bob_csrf, kind="message", id=message_id, reason="harassment")
    assert filed.status_code == 303
    assert filed.headers["location"] == "/community/messages?reported=1"
    # Ann cannot report her own message; a made-up id is nothing.
    ann_csrf = _csrf(ann)
    assert (
        _post(ann, "/community/report", csrf=ann_csrf, kind="message", id=message_id, reason="spam").status_code == 404
    )
    assert (
        _post(bob, "/community/report", csrf=bob_csrf, kind="message", id="ab" * 12, reason="spam").status_code == 404
    )

    mod = c["mod"]()
    queue = mod.get("/community/moderation")
    assert queue.status_code == 200
    assert REPORTED in queue.text
    assert NEIGHBOUR not in queue.text
    assert c["bob_handle"] in queue.text  # reporter
    assert c["ann_handle"] in queue.text  # author
    assert mod.get(f"/community/messages/{conv}").status_code == 404  # never the conversation
    report_id = re.search(r'name="report" value="([0-9a-f]+)"', queue.text)
    assert report_id is not None
    mod_csrf = _csrf(mod, "/community/moderation")
    hidden = _post(mod, "/community/moderation", csrf=mod_csrf, report=report_id.group(1), action="hide", days="7")
    assert hidden.status_code == 303
    after = mod.get("/community/moderation").text
    assert "Moderation history" in after
    assert "Hidden" in after
    assert "hidden by a moderator" in bob.get(f"/community/messages/{conv}").text
    assert REPORTED not in bob.get(f"/community/messages/{conv}").text
    bad = _post(mod, "/community/moderation", csrf=mod_csrf, report=report_id.group(1), action="suspend", days="x")
    assert bad.status_code == 400
    warned = _post(mod, "/community/moderation", csrf=mod_csrf, report=report_id.group(1), action="warn", days="7")
    assert warned.status_code == 303
    assert "moderator warned you" in ann.get("/community/messages").text
    # Not moderators: nothing there.
    for other in (ann, c["admin"]()):
        assert other.get("/community/moderation").status_code == 404


def test_the_operator_cannot_read_a_conversation(community: Any, settings: Any) -> None:
    c = community
    conv, _ = _conversation(c)
    token = settings.token_path.read_text().strip()
    by_token = TestClient(c["app"], base_url=BASE, headers={"Authorization": f"Bearer {token}"})
    admin = c["admin"]()
    attempts = [
        by_token.get(f"/community/api/messages/{conv}"),
        by_token.get("/community/api/messages"),
        by_token.get(f"/community/messages/{conv}", follow_redirects=False),
        admin.get(f"/community/api/messages/{conv}"),
        admin.get(f"/community/messages/{conv}"),
    ]
    assert [a.status_code for a in attempts] == [403, 403, 303, 404, 404]
    for attempt in attempts:
        assert REPORTED not in attempt.text
        assert NEIGHBOUR not in attempt.text
    # Even a member's session with a token added is refused: the token never reads messages.
    with_token = c["bob"].get(f"/community/api/messages/{conv}", headers={"Authorization": f"Bearer {token}"})
    assert with_token.status_code == 403
    # The FHIR API holds no message either: a search over everything the operator may read.
    everything = by_token.get("/fhir/AuditEvent", params={"_count": "100"})
    assert REPORTED not in everything.text


def test_the_json_face(community: Any) -> None:
    c = community
    ann, bob = c["ann"], c["bob"]
    conv, _ = _conversation(c)
    json_headers = {"Content-Type": "application/json", "Origin": BASE}
    listed = bob.get("/community/api/messages").json()
    assert listed["unread"] == 2
    assert listed["conversations"][0]["with"] == c["ann_handle"]
    read = bob.get(f"/community/api/messages/{conv}").json()
    assert [m["text"] for m in read["messages"]] == [NEIGHBOUR, REPORTED]
    no_csrf = ann.post(f"/community/api/messages/{conv}", json={"text": "hi"}, headers={"Origin": BASE})
    assert no_csrf.status_code == 403
    csrf = {**json_headers, "X-CSRF-Token": _csrf(ann)}
    warned = ann.post(
        f"/community/api/messages/{conv}", content=b'{"text": "' + PHONE_TEXT.encode() + b'"}', headers=csrf
    )
    assert warned.status_code == 409
    assert [f["kind"] for f in warned.json()["findings"]] == ["phone"]
    assert "0612" not in warned.json()["message"]
    sent = ann.post(f"/community/api/messages/{conv}", json={"text": PHONE_TEXT, "confirmContact": True}, headers=csrf)
    assert sent.status_code == 201
    for body, status in ((b"[1]", 400), (b"{bad", 400), (b'{"text": 5}', 400), (b'{"text": ""}', 400)):
        assert ann.post(f"/community/api/messages/{conv}", content=body, headers=csrf).status_code == status
    assert (
        ann.post(
            f"/community/api/messages/{conv}", content=b"text=x", headers={**csrf, "Content-Type": "text/plain"}
        ).status_code
        == 415
    )
    mod = c["mod"]()
    assert mod.get(f"/community/api/messages/{conv}").status_code == 404
    assert TestClient(c["app"], base_url=BASE).get("/community/api/messages").status_code == 401
    bob_csrf = {**json_headers, "X-CSRF-Token": _csrf(bob)}
    message_id = read["messages"][1]["id"]
    filed = bob.post(
        f"/community/api/messages/{conv}/report",
        json={"message": message_id, "reason": "harassment", "note": ""},
        headers=bob_csrf,
    )
    assert filed.status_code == 201
    assert "report" in filed.json()
    wrong_conv = bob.post(
        f"/community/api/messages/{'0' * 24}/report", json={"message": message_id, "reason": "spam"}, headers=bob_csrf
    )
    assert wrong_conv.status_code == 404
