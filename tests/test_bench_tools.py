"""The pure pieces of `make bench`: latency proxy, corpus, table."""

import socket
import socketserver
import threading
import time

import pytest

from bench import corpus
from bench.latency_proxy import Counters, Exchange, LatencyProxy
from bench.table import Row, fmt, markdown, percentile
from posta.mail.parse import parse_message


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def proxy():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = LatencyProxy("127.0.0.1", server.server_address[1], one_way=0.01).start()
    yield proxy
    proxy.stop()
    server.shutdown()
    server.server_close()


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


def test_proxy_delays_each_exchange_and_counts_it(proxy):
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        for word in (b"ping1", b"ping2", b"ping3"):
            sock.sendall(word)
            assert _recv_exactly(sock, 5) == word
    elapsed = time.perf_counter() - start
    counters = proxy.reset()
    # Three exchanges through 10 ms each way cannot take less than 60 ms.
    assert elapsed >= 0.06
    assert counters == Counters(
        connections=1, round_trips=4, bytes_up=15, bytes_down=15
    )
    assert proxy.counters == Counters()


def test_proxy_keeps_order_within_a_direction(proxy):
    chunks = [f"{n:04d}".encode() for n in range(200)]
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        assert _recv_exactly(sock, 800) == b"".join(chunks)


def test_exchange_counts_one_round_trip_per_client_turn():
    counters = Counters()
    exchange = Exchange(counters)
    for step in ("down", "up", "up", "down", "down", "up"):
        getattr(exchange, step)(10)
    assert counters.round_trips == 3  # greeting, then two client turns
    assert (counters.bytes_up, counters.bytes_down, counters.bytes_total) == (
        30,
        30,
        60,
    )


def test_corpus_is_deterministic_and_seeded():
    first = list(corpus.generate(40, seed=7))
    assert first == list(corpus.generate(40, seed=7))
    assert first != list(corpus.generate(40, seed=8))


def test_corpus_replies_thread_into_their_tasks():
    messages = list(corpus.generate(30, prefix="z"))
    for n, raw in enumerate(messages):
        parsed = parse_message(raw)
        assert parsed.in_reply_to == corpus.thread_id(corpus.task_of(n), "z")
        assert len(parsed.attachments) == (1 if n % 10 == 0 else 0)
        assert bool(parsed.html) == (n % 3 == 0)
        assert 2000 <= len(raw) <= 340 * 1024


def test_task_of_fills_the_heavy_task_first():
    assert {corpus.task_of(n) for n in range(corpus.HEAVY_REPLIES)} == {0}
    rest = {corpus.task_of(n) for n in range(corpus.HEAVY_REPLIES, corpus.COUNT)}
    assert rest == set(range(1, corpus.TASKS))


def test_table_formats_rows_with_ratio_and_verdict():
    row = Row("import", "throughput", 500.0, "msg/s", 1000.0, "mbsync", ">= 1x", False)
    text = markdown([row, Row("x", "latency", None, "s")])
    assert "| import | throughput" in text
    assert "1,000 msg/s (mbsync)" in text
    assert "0.50x" in text and "NO" in text
    assert "not measured" in text
    assert fmt(0.01234, "s") == "0.012 s"


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 95) == 95
    assert percentile(values, 50) == 50
    assert percentile([], 95) is None


def test_proxy_reset_keeps_counting_open_connections(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(b"one")
        assert _recv_exactly(sock, 3) == b"one"
        proxy.reset()
        sock.sendall(b"two")
        assert _recv_exactly(sock, 3) == b"two"
    assert proxy.reset() == Counters(round_trips=1, bytes_up=3, bytes_down=3)
