"""Bench 4: Graph requests for MAILS new mails and for an idle poll.

Against tests/fakes/microsoft.py with its limits on (4 in flight per mailbox,
429 with Retry-After past that). Posta: posta.mail.graph.delta_inbox (pages of
50), then one more round with the delta link. Peer: list the ids, then GET each
message with 4 threads, sleeping Retry-After on a 429. The fake has no plain
list endpoint, so the peer lists ids with a delta query selecting only `id`
(pages of 50, like $top=50); an idle poll of the peer lists the ids again.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.table import Row
from posta.mail import graph
from tests.fakes.microsoft import SCOPES, FakeMicrosoft

NAME = "graph"
MAILS = 1000
USER = "bench@contoso.test"
PAGE = 50
RETRY_AFTER = 1.0


def run(rig) -> list[Row]:
    """Fill a fake mailbox, run both clients, return the rows."""
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"  # http on loopback only
    fake = FakeMicrosoft().start()
    try:
        fake.limits(max_in_flight=4, retry_after=RETRY_AFTER)
        fake.add_user(USER, "Bench")
        for n in range(MAILS):
            _deliver(fake, n)
        posta, idle = _posta(fake)
        peer, peer_idle = _peer(fake)
    finally:
        fake.stop()
    return _rows(posta, idle, peer, peer_idle)


def _rows(posta: dict, idle: dict, peer: dict, peer_idle: dict) -> list[Row]:
    per_1000 = posta["requests"] * 1000 / MAILS
    peer_name = "list ids + GET each"
    return [
        Row(
            NAME,
            f"messages read of {MAILS}",
            posta["messages"],
            "msgs",
            peer["messages"],
            peer_name,
            f"= {MAILS}",
            posta["messages"] == MAILS,
        ),
        Row(
            NAME,
            "requests per 1,000 new mails",
            per_1000,
            "req",
            peer["requests"] * 1000 / MAILS,
            peer_name,
            "<= 25, >= 10x fewer than peer",
            per_1000 <= 25 and posta["requests"] * 10 <= peer["requests"],
        ),
        Row(
            NAME,
            "429 answers, new mails",
            posta["429"],
            "",
            peer["429"],
            peer_name,
            "0",
            posta["429"] == 0,
        ),
        Row(NAME, "wall time, new mails", posta["wall"], "s", peer["wall"], peer_name),
        Row(
            NAME,
            "requests per idle poll",
            idle["requests"],
            "req",
            peer_idle["requests"],
            peer_name,
            "1",
            idle["requests"] == 1,
        ),
        Row(
            NAME,
            "429 answers, idle poll",
            idle["429"],
            "",
            peer_idle["429"],
            peer_name,
            "0",
            idle["429"] == 0,
        ),
    ]


def _deliver(fake: FakeMicrosoft, n: int) -> None:
    parent = f"<bench-graph-{n % 50}@posta.test>"
    fake.deliver(
        USER,
        subject=f"Re: Task {n % 50} quote",
        sender=("Client", f"client{n % 97}@client.test"),
        body_text=f"Reply {n}. " + "Thanks for the quote, it looks fine. " * 40,
        internet_message_id=f"<graph-reply-{n}@client.test>",
        in_reply_to=parent,
        references=[parent],
    )


def _posta(fake: FakeMicrosoft) -> tuple[dict, dict]:
    """Run delta_inbox to the end, then an idle round with the delta link."""
    settings = graph.GraphSettings(
        graph_url=fake.graph_url,
        token_url=fake.token_url,
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        scopes=SCOPES,
    )
    client = graph.GraphClient(
        settings, fake.grant(USER, SCOPES), lambda token: None, mailbox=USER
    )
    link = None

    def full() -> int:
        nonlocal link
        count = 0
        for page in graph.delta_inbox(client, page_size=PAGE):
            count += len(page.messages)
            link = page.delta_link or link
        return count

    first = _counted(fake, full)
    idle = _counted(fake, lambda: sum(1 for _ in graph.delta_inbox(client, link)))
    return first, idle


def _peer(fake: FakeMicrosoft) -> tuple[dict, dict]:
    """List ids then GET each message; then an idle poll (list ids again)."""
    token = fake.grant(USER, SCOPES)["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    def full() -> int:
        ids = _list_ids(fake, headers)
        with ThreadPoolExecutor(max_workers=4) as pool:
            return sum(pool.map(lambda i: _get(fake, headers, i), ids))

    first = _counted(fake, full)
    idle = _counted(fake, lambda: len(_list_ids(fake, headers)))
    return first, idle


def _list_ids(fake: FakeMicrosoft, headers: dict) -> list[str]:
    url = f"{fake.graph_url}/me/mailFolders/inbox/messages/delta?$select=id"
    ids = []
    while url:
        data = _request(url, {**headers, "Prefer": f"odata.maxpagesize={PAGE}"})
        ids += [item["id"] for item in data["value"]]
        url = data.get("@odata.nextLink")
    return ids


def _get(fake: FakeMicrosoft, headers: dict, message_id: str) -> int:
    _request(f"{fake.graph_url}/me/messages/{message_id}", headers)
    return 1


def _request(url: str, headers: dict) -> dict:
    """GET with a naive 429 loop (bounded: 10 attempts)."""
    for _ in range(10):
        response = requests.get(url, headers=headers, timeout=30)
        if response.status_code != 429:
            response.raise_for_status()
            return response.json()
        time.sleep(float(response.headers.get("Retry-After", RETRY_AFTER)))
    raise RuntimeError(f"still throttled: {url}")


def _counted(fake: FakeMicrosoft, work) -> dict:
    """Run work(); return its result with the requests and 429s it caused."""
    mark = len(fake.requests)
    start = time.perf_counter()
    messages = work()
    wall = time.perf_counter() - start
    made = fake.requests[mark:]
    return {
        "messages": messages,
        "requests": len(made),
        "429": sum(1 for r in made if r.status == 429),
        "wall": wall,
    }
