"""Lists, tasks, comments, the activity stream and the comment/email box."""

from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import event, func, select

from posta.extensions import db
from posta.models import Attachment, Comment, Message, Role, Task, TaskList, User
from posta.services import tasks


@pytest.fixture
def member(make_user):
    return make_user(Role.MEMBER, name="Mia Member")


@pytest.fixture
def task_list(workspace):
    found = TaskList(name="Launch")
    db.session.add(found)
    db.session.commit()
    return found


@pytest.fixture
def task(task_list, owner):
    found = Task(task_list=task_list, name="Write copy", created_by=owner)
    db.session.add(found)
    db.session.commit()
    return found


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def at(hour: int) -> datetime:
    return datetime(2030, 1, 1, hour, tzinfo=UTC)


@contextmanager
def counting_queries():
    """Count the SQL statements run inside the block."""
    statements = []

    def record(*args):
        statements.append(args[2])

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def test_create_list_and_see_counts(member, client_for):
    client = client_for(member)
    response = client.post("/lists", {"name": "  Launch  "})
    created = db.session.scalars(select(TaskList)).one()
    assert created.name == "Launch"
    assert response.location.endswith(f"/lists/{created.id}")
    db.session.add_all(
        [
            Task(task_list=created, name="a"),
            Task(task_list=created, name="b", status="in_progress"),
            Task(task_list=created, name="c", status="done"),
        ]
    )
    db.session.commit()

    summary = tasks.list_summaries()[0]
    assert (summary.open, summary.done) == (2, 1)
    page = client.get("/").get_data(as_text=True)
    assert "Launch" in page
    assert "<td>2</td>" in page and "<td>1</td>" in page


@pytest.mark.parametrize(
    "name, message",
    [("   ", "Give the list a name."), ("x" * 121, "at most 120 characters")],
)
def test_bad_list_name_changes_nothing(member, client_for, name, message):
    response = client_for(member).post("/lists", {"name": name}, follow_redirects=True)
    assert message in response.get_data(as_text=True)
    assert count(TaskList) == 0


def test_create_task_with_assignees_and_due_date(task_list, member, client_for):
    response = client_for(member).post(
        f"/lists/{task_list.id}/tasks",
        {
            "name": "Print posters",
            "description": "A3, colour",
            "assignees": [str(member.id)],
            "due": "2030-02-01",
        },
    )
    created = db.session.scalars(select(Task)).one()
    assert response.location.endswith(f"/tasks/{created.id}")
    assert created.task_list == task_list
    assert created.created_by == member
    assert created.assignees == [member]
    assert created.due_date == date(2030, 2, 1)
    assert created.description == "A3, colour"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": ""}, "Give the task a name."),
        ({"name": "x" * 201}, "at most 200 characters"),
        ({"name": "Ok", "due": "31/01/2030"}, "The due date must be a date"),
        ({"name": "Ok", "assignees": ["9999"]}, "only to active people"),
    ],
)
def test_bad_new_task_changes_nothing(task_list, member, client_for, data, message):
    response = client_for(member).post(
        f"/lists/{task_list.id}/tasks", data, follow_redirects=True
    )
    assert message in response.get_data(as_text=True)
    assert count(Task) == 0


def test_list_shows_open_tasks_first(task_list, client_for, member):
    db.session.add_all(
        [
            Task(task_list=task_list, name="Finished thing", status="done"),
            Task(task_list=task_list, name="Later thing", due_date=date(2030, 5, 1)),
            Task(task_list=task_list, name="Sooner thing", due_date=date(2030, 1, 1)),
        ]
    )
    db.session.commit()
    page = client_for(member).get(f"/lists/{task_list.id}").get_data(as_text=True)
    assert page.index("Sooner thing") < page.index("Later thing")
    assert page.index("Later thing") < page.index("Finished thing")


def test_edit_task(task, member, client_for):
    response = client_for(member).post(
        f"/tasks/{task.id}/edit",
        {
            "name": "Write better copy",
            "description": "Shorter",
            "status": "in_progress",
            "assignees": [str(member.id)],
            "due": "2030-03-03",
        },
        follow_redirects=True,
    )
    assert "Task saved." in response.get_data(as_text=True)
    assert task.name == "Write better copy"
    assert task.description == "Shorter"
    assert task.status == "in_progress"
    assert task.assignees == [member]
    assert task.due_date == date(2030, 3, 3)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": " "}, "Give the task a name."),
        ({"due": "2030-13-40"}, "The due date must be a date"),
        ({"assignees": ["9999"]}, "only to active people"),
        ({"status": "archived"}, "open, in progress or done"),
    ],
)
def test_bad_edit_changes_nothing(task, member, client_for, change, message):
    data = {"name": "Renamed", "status": "done", "assignees": [str(member.id)]}
    data.update(change)
    response = client_for(member).post(
        f"/tasks/{task.id}/edit", data, follow_redirects=True
    )
    assert message in response.get_data(as_text=True)
    db.session.refresh(task)
    assert (task.name, task.status, task.assignees) == ("Write copy", "open", [])


def test_cannot_assign_deactivated_person(task, member, make_user, client_for):
    gone = make_user(Role.MEMBER)
    gone.active = False
    db.session.commit()
    response = client_for(member).post(
        f"/tasks/{task.id}/edit",
        {"name": "x", "status": "open", "assignees": [str(gone.id)]},
        follow_redirects=True,
    )
    assert "only to active people" in response.get_data(as_text=True)
    assert task.assignees == []


def test_close_and_reopen(task, member, client_for):
    client = client_for(member)
    client.post(f"/tasks/{task.id}/close")
    assert task.status == "done" and task.closed_at is not None
    assert "Reopen task" in client.get(f"/tasks/{task.id}").get_data(as_text=True)
    client.post(f"/tasks/{task.id}/reopen")
    assert task.status == "open" and task.closed_at is None


def test_quick_status_from_list(task, task_list, member, client_for):
    client_for(member).post(
        f"/lists/{task_list.id}/status", {"task_id": task.id, "status": "done"}
    )
    assert task.status == "done"


def test_quick_status_refuses_task_of_another_list(task, member, client_for):
    other = TaskList(name="Other")
    db.session.add(other)
    db.session.commit()
    response = client_for(member).post(
        f"/lists/{other.id}/status",
        {"task_id": task.id, "status": "done"},
        follow_redirects=True,
    )
    assert "That task belongs to another list." in response.get_data(as_text=True)
    assert task.status == "open"


def test_comment(task, member, client_for):
    response = client_for(member).post(
        f"/tasks/{task.id}/comments", {"body": "Looks good"}, follow_redirects=True
    )
    comment = db.session.scalars(select(Comment)).one()
    assert (comment.author, comment.body, comment.task_id) == (
        member,
        "Looks good",
        task.id,
    )
    assert f'id="comment-{comment.id}"' in response.get_data(as_text=True)


def test_empty_comment_changes_nothing(task, member, client_for):
    response = client_for(member).post(
        f"/tasks/{task.id}/comments", {"body": "  \n "}, follow_redirects=True
    )
    assert "Write something" in response.get_data(as_text=True)
    assert count(Comment) == 0


def message_row(task, direction, created, sent=None, subject="") -> Message:
    row = Message(
        task_id=task.id,
        direction=direction,
        dedupe_key=f"{direction}-{created.isoformat()}",
        subject=subject,
        created_at=created,
        sent_date=sent,
    )
    db.session.add(row)
    return row


def test_stream_interleaves_comments_and_emails_by_time(task, owner):
    db.session.add_all(
        [
            Comment(task_id=task.id, author=owner, body="c1", created_at=at(9)),
            Comment(task_id=task.id, author=owner, body="c2", created_at=at(12)),
        ]
    )
    message_row(task, "out", created=at(10), subject="out")
    # Fetched at 13:00 but written at 11:00: it sorts by when it was written.
    message_row(task, "in", created=at(13), sent=at(11), subject="in")
    db.session.commit()

    with_email = tasks.activity(task, include_email=True).items
    labels = [i.obj.body if i.kind == "comment" else i.obj.subject for i in with_email]
    assert labels == ["c1", "out", "in", "c2"]
    assert [i.kind for i in tasks.activity(task).items] == ["comment", "comment"]


def test_stream_pages_newest_first_each_page_oldest_first(task, owner):
    start = at(9)
    for n in range(tasks.STREAM_PAGE + 5):
        when = start + timedelta(minutes=n)
        if n % 2:
            message_row(task, "in", created=at(23), sent=when, subject=f"s{n}")
        else:
            db.session.add(
                Comment(task_id=task.id, author=owner, body=f"s{n}", created_at=when)
            )
    db.session.commit()

    def labels(page):
        return [
            i.obj.body if i.kind == "comment" else i.obj.subject for i in page.items
        ]

    newest = tasks.activity(task, include_email=True)
    assert labels(newest) == [f"s{n}" for n in range(5, tasks.STREAM_PAGE + 5)]
    assert (newest.has_earlier, newest.has_later) == (True, False)
    earlier = tasks.activity(task, include_email=True, page=2)
    assert labels(earlier) == [f"s{n}" for n in range(5)]
    assert (earlier.has_earlier, earlier.has_later) == (False, True)
    assert tasks.activity(task, include_email=True, page=0).page == 1


def test_stream_pages_split_equal_times_without_gaps(task, owner):
    # Comments and emails share ids and times here: every item still shows once.
    for n in range(tasks.STREAM_PAGE):
        db.session.add(
            Comment(task_id=task.id, author=owner, body="c", created_at=at(9))
        )
        message_row(task, "out", created=at(9)).dedupe_key = f"same-{n}"
    db.session.commit()

    pages = [tasks.activity(task, include_email=True, page=n) for n in (2, 1)]
    shown = [(i.kind, i.obj.id) for page in pages for i in page.items]
    assert len(shown) == 2 * tasks.STREAM_PAGE == len(set(shown))
    assert shown == sorted(shown, key=lambda kind_id: (kind_id[1], kind_id[0]))


def test_task_page_links_earlier_and_later_activity(task, owner, client_for):
    for n in range(tasks.STREAM_PAGE + 1):
        when = at(9) + timedelta(minutes=n)
        db.session.add(
            Comment(task_id=task.id, author=owner, body=f"note {n}.", created_at=when)
        )
    db.session.commit()
    client = client_for(owner)

    newest = client.get(f"/tasks/{task.id}").get_data(as_text=True)
    assert "note 0." not in newest and f"note {tasks.STREAM_PAGE}." in newest
    assert f'href="/tasks/{task.id}?page=2#activity-heading"' in newest
    assert 'id="stream-later"' not in newest
    earlier = client.get(f"/tasks/{task.id}?page=2").get_data(as_text=True)
    assert "note 0." in earlier and "note 1." not in earlier
    assert 'id="stream-earlier"' not in earlier
    assert f'href="/tasks/{task.id}#activity-heading"' in earlier
    for junk in ("abc", "0", "-3"):
        page = client.get(f"/tasks/{task.id}?page={junk}").get_data(as_text=True)
        assert f"note {tasks.STREAM_PAGE}." in page


def test_page_queries_do_not_grow_with_rows(task_list, owner, email_on, client_for):
    task = Task(task_list=task_list, name="Busy", created_by=owner)
    db.session.add(task)
    db.session.commit()
    client = client_for(owner)

    def queries(url):
        client.get(url)  # warm the login and statement caches
        with counting_queries() as statements:
            assert client.get(url).status_code == 200
        return len(statements)

    def add_rows(n):
        task_id = task.id
        for i in range(n):
            person = User(email=f"p{n}-{i}@example.test", name=f"P {n}-{i}")
            attachment = Attachment(
                filename="a.txt", content_type="text/plain", size=1, storage_key="k"
            )
            db.session.add_all(
                [
                    Task(task_list=task_list, name=f"t{n}-{i}", assignees=[person]),
                    Comment(task_id=task_id, author=person, body="hi"),
                    Message(
                        task_id=task_id,
                        direction="in",
                        dedupe_key=f"{n}-{i}",
                        attachments=[attachment],
                    ),
                ]
            )
        db.session.commit()

    add_rows(2)
    before = (queries(f"/lists/{task_list.id}"), queries(f"/tasks/{task.id}"))
    add_rows(8)
    after = (queries(f"/lists/{task_list.id}"), queries(f"/tasks/{task.id}"))
    assert after == before


def test_task_page_renders_stream_in_order(task, owner, email_on, client_for):
    db.session.add(
        Comment(task_id=task.id, author=owner, body="first", created_at=at(9))
    )
    db.session.add(
        Comment(task_id=task.id, author=owner, body="last", created_at=at(11))
    )
    row = message_row(task, "out", created=at(10))
    db.session.commit()
    page = client_for(owner).get(f"/tasks/{task.id}").get_data(as_text=True)
    assert page.index("first") < page.index(f'id="message-{row.id}"')
    assert page.index(f'id="message-{row.id}"') < page.index("last")


def test_guest_sees_no_email_in_stream(task, owner, email_on, make_user, client_for):
    row = message_row(task, "in", created=at(10))
    db.session.commit()
    page = client_for(make_user(Role.GUEST)).get(f"/tasks/{task.id}")
    assert f'id="message-{row.id}"' not in page.get_data(as_text=True)


def test_email_tab_absent_when_app_off(task, member, client_for):
    page = client_for(member).get(f"/tasks/{task.id}").get_data(as_text=True)
    assert 'id="tab-comment"' in page and 'id="panel-comment"' in page
    assert 'id="tab-email"' not in page and 'id="panel-email"' not in page


def test_email_tab_absent_for_guests(task, email_on, make_user, client_for):
    page = client_for(make_user(Role.GUEST)).get(f"/tasks/{task.id}")
    assert 'id="tab-email"' not in page.get_data(as_text=True)


def test_email_tab_present_for_members_when_on(task, email_on, member, client_for):
    client = client_for(member)
    page = client.get(f"/tasks/{task.id}").get_data(as_text=True)
    assert 'id="tab-email"' in page
    assert 'id="panel-email" role="tabpanel" aria-labelledby="tab-email" ' in page
    assert 'data-panel="email" hidden' in page
    # Without JavaScript, ?tab=email shows the email panel instead.
    chosen = client.get(f"/tasks/{task.id}?tab=email").get_data(as_text=True)
    assert 'data-panel="email">' in chosen
    assert 'data-panel="comment" hidden' in chosen


def test_guest_can_view_and_comment_but_not_edit(
    task, task_list, make_user, client_for
):
    client = client_for(make_user(Role.GUEST))
    assert client.get("/").status_code == 200
    assert client.get(f"/lists/{task_list.id}").status_code == 200
    page = client.get(f"/tasks/{task.id}").get_data(as_text=True)
    assert "Edit task" not in page
    client.post(f"/tasks/{task.id}/comments", {"body": "Hi from outside"})
    assert db.session.scalars(select(Comment.body)).all() == ["Hi from outside"]

    assert client.post("/lists", {"name": "Mine"}).status_code == 403
    assert client.post(f"/lists/{task_list.id}/tasks", {"name": "t"}).status_code == 403
    assert client.post(f"/tasks/{task.id}/close").status_code == 403
    edit = client.post(f"/tasks/{task.id}/edit", {"name": "Hijack", "status": "open"})
    assert edit.status_code == 403
    assert task.name == "Write copy" and task.status == "open"


@pytest.mark.parametrize(
    "url",
    ["/lists/999", "/tasks/999"],
)
def test_unknown_ids_are_404(workspace, member, client_for, url):
    assert client_for(member).get(url).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/lists/999/tasks",
        "/lists/999/status",
        "/tasks/999/edit",
        "/tasks/999/close",
        "/tasks/999/reopen",
        "/tasks/999/comments",
    ],
)
def test_posts_to_unknown_ids_are_404(workspace, member, client_for, url):
    assert client_for(member).post(url, {"name": "x", "body": "x"}).status_code == 404


def test_pages_need_login(task, client_for):
    for url in ("/", f"/tasks/{task.id}"):
        response = client_for().get(url)
        assert response.status_code == 302
        assert "/login" in response.location


@pytest.mark.parametrize(
    "url",
    [
        "/lists",
        "/lists/{list}/tasks",
        "/lists/{list}/status",
        "/tasks/{task}/edit",
        "/tasks/{task}/close",
        "/tasks/{task}/reopen",
        "/tasks/{task}/comments",
    ],
)
def test_every_post_needs_csrf_token(task, task_list, owner, client_for, url):
    before = (count(TaskList), count(Comment), task.status, task.name)
    data = {"name": "CSRF", "body": "CSRF", "task_id": task.id, "status": "done"}
    url = url.format(list=task_list.id, task=task.id)
    response = client_for(owner).post(url, data, csrf=False)
    assert response.status_code == 400
    db.session.refresh(task)
    assert (count(TaskList), count(Comment), task.status, task.name) == before


@pytest.mark.browser
def test_comment_and_email_tabs_in_browser(live_server, page):
    page.goto(live_server.url + "/setup")
    page.fill("input[name=workspace_name]", "Acme")
    page.fill("input[name=name]", "Olga Owner")
    page.fill("input[name=email]", "olga@example.test")
    page.fill("input[name=password]", "correct horse battery")
    page.fill("input[name=confirm]", "correct horse battery")
    page.click("button[type=submit]")
    page.fill("#new-list-heading + form input[name=name]", "Launch")
    page.click("text=Create list")
    page.fill("#new-task-heading + form input[name=name]", "Write copy")
    page.click("text=Create task")
    page.fill("textarea[name=body]", "First draft is up")
    page.click("text=Add comment")
    assert page.locator(".stream-comment").inner_text().endswith("First draft is up")
    assert page.locator("#tab-email").count() == 0
    task_url = page.url.split("#")[0]

    page.goto(live_server.url + "/settings/apps")
    page.check("input[name=email_enabled]")
    page.click("text=Save")
    page.goto(task_url)
    assert page.locator("#panel-comment").is_visible()
    assert not page.locator("#panel-email").is_visible()
    page.click("#tab-email")
    assert page.locator("#panel-email").is_visible()
    assert not page.locator("#panel-comment").is_visible()
    assert page.url == task_url, "JavaScript switches tabs without reloading"
