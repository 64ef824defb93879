"""Numbers too big to be ids, in URLs, query strings and forms, are "not found".

They once reached SQLite, which cannot bind them (OverflowError), and every such
request answered 500.
"""

import re

import pytest

from posta.extensions import db
from posta.ids import MAX_ID, as_id, parse_id
from posta.models import Comment, Task, TaskList

HUGE = "99999999999999999999"


@pytest.fixture
def task(owner):
    task_list = TaskList(name="Sales")
    found = Task(task_list=task_list, name="Quote for Rossi", created_by=owner)
    db.session.add_all([task_list, found])
    db.session.commit()
    return found


def int_rules(app, method):
    for rule in app.url_map.iter_rules():
        if method in rule.methods and "int:" in rule.rule:
            yield re.sub(r"<int:\w+>", HUGE, rule.rule)


def test_parse_id_keeps_what_an_id_column_holds():
    assert parse_id("42") == 42
    assert parse_id(str(MAX_ID)) == MAX_ID
    assert parse_id(str(MAX_ID + 1)) is None
    assert parse_id(HUGE) is None
    assert parse_id("abc") is None
    assert parse_id(None) is None
    with pytest.raises(ValueError):
        as_id(HUGE)


def test_every_get_url_with_a_huge_id_is_404(app, owner, email_on, client_for):
    client = client_for(owner)
    urls = list(int_rules(app, "GET"))
    assert len(urls) >= 9
    answers = {url: client.get(url).status_code for url in urls}
    assert answers == {url: 404 for url in urls}


def test_every_post_url_with_a_huge_id_is_404(app, owner, email_on, client_for):
    client = client_for(owner)
    urls = list(int_rules(app, "POST"))
    assert len(urls) > 10
    answers = {url: client.post(url).status_code for url in urls}
    assert answers == {url: 404 for url in urls}


def test_huge_ids_in_query_strings_are_not_errors(owner, email_on, task, client_for):
    client = client_for(owner)
    page = client.get(f"/tasks/{task.id}?page={HUGE}")
    assert page.status_code == 200
    assert b"Quote for Rossi" in page.data
    assert client.get(f"/email/connect?task={HUGE}").status_code == 200
    assert client.get(f"/email/connect/exchange?task={HUGE}").status_code == 200
    assert client.get(f"/email/templates?template={HUGE}").status_code == 200


def test_huge_ids_in_forms_are_refused_with_a_message(
    owner, email_on, task, client_for
):
    client = client_for(owner)
    sent = client.post(
        f"/email/tasks/{task.id}/send",
        {"account_id": HUGE, "to": "rossi@client.test", "body": "Hi"},
    )
    assert sent.status_code == 302
    closed = client.post(
        f"/lists/{task.list_id}/status",
        {"task_id": HUGE, "status": "done"},
        follow_redirects=True,
    )
    assert closed.status_code == 200
    assert b"That task does not exist." in closed.data
    created = client.post(
        f"/lists/{task.list_id}/tasks",
        {"name": "Follow up", "assignees": [HUGE]},
    )
    assert created.status_code == 302
    assert db.session.scalar(db.select(Task).filter_by(name="Follow up")) is None
    assert client.post(f"/tasks/{task.id}/comments", {"body": "ok"}).status_code == 302
    assert db.session.scalar(db.select(Comment).filter_by(body="ok")) is not None
