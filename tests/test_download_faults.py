"""Downloads against an HTTP server on 127.0.0.1 that misbehaves on demand: dropped
connections (with and without Range support), corrupted bytes, error statuses and a server
that never answers."""

from __future__ import annotations

import functools
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import config
from test_download import assert_real_mnist

from pipeline.data.download import download
from pipeline.data.idx import IDX_FILES
from pipeline.errors import DownloadError
from pipeline.paths import Paths

BIG = IDX_FILES["x_train"]  # 9.7 MB: the file to break


class Faulty(BaseHTTPRequestHandler):
    """Serves a directory; `mode` says how to misbehave on the big file."""

    def __init__(self, *args, directory: Path, mode: str, hits: Counter, **kwargs) -> None:
        self.directory, self.mode, self.hits = directory, mode, hits
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        name = self.path.strip("/").split("/")[-1]
        self.hits[name] += 1
        path = self.directory / name
        if not path.is_file() or (name == BIG and self.mode == "404"):
            return self.send_error(404)
        if name == BIG and self.mode == "500":
            return self.send_error(500)
        body = path.read_bytes()
        if name == BIG and self.mode == "corrupt":
            body = body[:1000] + bytes([body[1000] ^ 0xFF]) + body[1001:]
        start = 0
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and self.mode == "drop-range":
            start = int(ranged[6:].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if name == BIG and self.mode.startswith("drop") and self.hits[name] == 1:
            # Half the file, then the connection goes away.
            self.wfile.write(body[start : len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body[start:])


@pytest.fixture
def faulty(mnist_dir: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Counter]]:
    hits: Counter = Counter()
    handler = functools.partial(Faulty, directory=mnist_dir, mode=request.param, hits=hits)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", hits
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("faulty", ["drop-range", "drop"], indirect=True)
def test_dropped_connection_resumes_and_verifies(
    faulty: tuple[str, Counter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, hits = faulty
    monkeypatch.setenv("MNIST_MIRROR", url)
    paths = Paths.project(tmp_path)
    download(config("data.retries=3"), paths)
    assert_real_mnist(paths.raw)
    assert hits[BIG] == 2  # one dropped, one resumed (Range) or restarted (no Range)


@pytest.mark.parametrize("faulty", ["corrupt"], indirect=True)
def test_corrupted_bytes_fail_the_source_and_the_next_is_tried(
    faulty: tuple[str, Counter], mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = faulty
    monkeypatch.setenv("MNIST_MIRROR", url)
    paths = Paths.project(tmp_path)
    expected = config().data.idx_sha256[BIG]
    with pytest.raises(DownloadError) as err:
        download(config(), paths)
    message = str(err.value)
    assert f"{url}: {BIG}: corrupt gzip data (CRC check failed" in message
    hashes = set(re.findall(r"\b[0-9a-f]{64}\b", message))
    assert expected in hashes and len(hashes) == 2  # what arrived, and what was expected
    assert not paths.raw.exists() and list(paths.raw.parent.iterdir()) == []
    # With a good source after it, the download succeeds from that one.
    download(config(f"data.sources=[{mnist_dir}]"), paths)
    assert_real_mnist(paths.raw)


@pytest.mark.parametrize(("faulty", "attempts"), [("500", 3), ("404", 1)], indirect=["faulty"])
def test_error_statuses_are_retried_only_when_transient(
    faulty: tuple[str, Counter], attempts: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, hits = faulty
    monkeypatch.setenv("MNIST_MIRROR", url)
    paths = Paths.project(tmp_path)
    code = "500" if attempts > 1 else "404"
    with pytest.raises(DownloadError, match=f"HTTP {code} for {url}{BIG}"):
        download(config("data.retries=3"), paths)
    assert hits[BIG] == attempts
    assert not paths.raw.exists()


@pytest.mark.slow
def test_server_that_never_answers_times_out_then_next_source(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections (the kernel does) and never says a word
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    monkeypatch.setenv("MNIST_MIRROR", url)
    paths = Paths.project(tmp_path)
    start = time.monotonic()
    try:
        with pytest.raises(DownloadError) as err:
            download(config("data.retries=2", "data.timeout=1"), paths)
        elapsed = time.monotonic() - start
        download(config("data.retries=2", "data.timeout=1", f"data.sources=[{mnist_dir}]"), paths)
    finally:
        listener.close()
    message = str(err.value)
    assert f"{url}: timed out" in message and "(after 2 attempts)" in message
    assert "MNIST_MIRROR" in message
    assert 2 <= elapsed < 30  # two 1 s timeouts and a backoff, not a hang
    assert_real_mnist(paths.raw)


def test_file_url_mirror_missing_a_file_is_named(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in list(IDX_FILES.values())[:3]:
        (partial / name).symlink_to(mnist_dir / name)
    monkeypatch.setenv("MNIST_MIRROR", partial.as_uri())
    paths = Paths.project(tmp_path / "project")
    with pytest.raises(DownloadError) as err:
        download(config(), paths)
    message = str(err.value)
    assert f"{partial.as_uri()}: t10k-labels-idx1-ubyte.gz: no such file in {partial}" in message
    assert "Set MNIST_MIRROR" in message and not paths.raw.exists()
