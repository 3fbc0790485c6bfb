"""Downloads of zoo entries: verified, atomic, bounded by a timeout, and clear when they fail."""

from __future__ import annotations

import functools
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from brickzoo.errors import DownloadError, WeightsError, WeightsNotFoundError
from brickzoo.zoo import brickzoo_home
from brickzoo.zoo._download import check_url, download_file, is_url, join_url, staged_folder


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder; ``/drop/<file>`` announces the whole file but sends half of it and hangs up."""

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/drop/"):
            data = (Path(self.directory) / self.path[len("/drop/") :]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``(base URL, folder)`` of an HTTP server on 127.0.0.1 serving ``folder``."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_a_served_file_arrives_whole_with_its_sha256(served: tuple[str, Path], tmp_path: Path) -> None:
    base, folder = served
    payload = bytes(range(256)) * 1000
    (folder / "blob.bin").write_bytes(payload)
    expected = hashlib.sha256(payload).hexdigest()
    got = download_file(f"{base}/blob.bin", tmp_path / "out" / "blob.bin", expected, progress=False)
    assert got == expected
    assert (tmp_path / "out" / "blob.bin").read_bytes() == payload
    assert _files(tmp_path / "out") == [tmp_path / "out" / "blob.bin"]  # no temporary file left


def test_a_wrong_checksum_names_url_and_both_hashes_and_leaves_nothing(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    base, folder = served
    (folder / "blob.bin").write_bytes(b"tampered content")
    expected = hashlib.sha256(b"original content").hexdigest()
    got = hashlib.sha256(b"tampered content").hexdigest()
    out = tmp_path / "out"
    with pytest.raises(WeightsError) as info:
        download_file(f"{base}/blob.bin", out / "blob.bin", expected, progress=False)
    message = str(info.value)
    assert f"{base}/blob.bin" in message and expected in message and got in message
    assert _files(out) == []


def test_a_dropped_connection_is_an_error_and_leaves_nothing(served: tuple[str, Path], tmp_path: Path) -> None:
    base, folder = served
    payload = b"x" * 100_000
    (folder / "blob.bin").write_bytes(payload)
    out = tmp_path / "out"
    with pytest.raises(ConnectionError, match=r"dropped after 50000 of 100000 bytes") as info:
        download_file(f"{base}/drop/blob.bin", out / "blob.bin", None, progress=False)
    assert f"{base}/drop/blob.bin" in str(info.value)
    assert _files(out) == []


def test_a_missing_file_on_the_server_is_not_found(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    with pytest.raises(WeightsNotFoundError, match=r"HTTP 404") as info:
        download_file(f"{base}/nothing.bin", tmp_path / "out" / "nothing.bin", progress=False)
    assert isinstance(info.value, FileNotFoundError)
    assert _files(tmp_path / "out") == []


def test_a_refused_connection_names_the_url_and_the_local_copy_way(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/entry/card.json"
    with pytest.raises(DownloadError) as info:
        download_file(url, tmp_path / "card.json", timeout=2, progress=False)
    message = str(info.value)
    assert url in message and "download the entry elsewhere" in message and "pass that folder" in message
    assert isinstance(info.value, (ConnectionError, WeightsError))
    assert not (tmp_path / "card.json").exists()


def test_a_server_that_never_answers_fails_within_the_timeout(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never reads nor answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/card.json"
        start = time.perf_counter()
        with pytest.raises(DownloadError, match=r"no answer within the timeout of 0.3 s") as info:
            download_file(url, tmp_path / "out" / "card.json", timeout=0.3, progress=False)
        elapsed = time.perf_counter() - start
    assert elapsed < 5, f"the download hung for {elapsed:.1f} s with a 0.3 s timeout"
    assert url in str(info.value)
    assert _files(tmp_path / "out") == []


def test_a_missing_local_file_url_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match=r"no such file"):
        download_file((tmp_path / "absent.bin").as_uri(), tmp_path / "copy.bin", progress=False)


def test_plain_http_is_only_for_this_machine_and_other_schemes_are_refused() -> None:
    check_url("http://127.0.0.1:8000/a")
    check_url("http://localhost/a")
    check_url("http://[::1]:9/a")
    check_url("https://example.org/a")
    with pytest.raises(WeightsError, match=r"use https://"):
        check_url("http://example.org/zoo/card.json")
    with pytest.raises(WeightsError, match=r"expected an https://"):
        check_url("ftp://example.org/zoo/card.json")
    assert is_url("file:///tmp/a") and is_url("HTTPS://x/y") and not is_url("runs/a") and not is_url("zoo:a")


def test_the_cache_is_brickzoo_home_or_under_the_torch_hub_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRICKZOO_HOME", str(tmp_path / "home"))
    assert brickzoo_home() == tmp_path / "home"
    monkeypatch.delenv("BRICKZOO_HOME")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert brickzoo_home() == Path(torch.hub.get_dir()) / "brickzoo"
    assert brickzoo_home() == tmp_path / "torch" / "hub" / "brickzoo"


def test_a_staged_folder_appears_complete_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "entry"
    with pytest.raises(KeyboardInterrupt), staged_folder(target) as tmp:
        (tmp / "card.json").write_text("{}")
        raise KeyboardInterrupt
    assert not target.exists() and list((tmp_path / "cache").iterdir()) == []
    with staged_folder(target) as tmp:
        (tmp / "weights").mkdir()
        (tmp / "weights" / "a.safetensors").write_bytes(b"1")
    assert [p.relative_to(target).as_posix() for p in _files(target)] == ["weights/a.safetensors"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["entry"]


def test_join_url_quotes_each_part() -> None:
    assert join_url("https://h/zoo", "weights/a b.safetensors") == "https://h/zoo/weights/a%20b.safetensors"
    assert join_url("file:///tmp/e/", "config.yaml") == "file:///tmp/e/config.yaml"


@settings(max_examples=20, deadline=None)
@given(payload=st.binary(min_size=0, max_size=300_000))
def test_any_bytes_survive_a_download_and_hash_like_hashlib(payload: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "source.bin"
        source.write_bytes(payload)
        got = download_file(source.as_uri(), Path(folder) / "copy.bin", progress=False)
        assert got == hashlib.sha256(payload).hexdigest()
        assert (Path(folder) / "copy.bin").read_bytes() == payload


def test_downloads_and_staged_folders_get_the_usual_permissions_not_private_ones(tmp_path: Path) -> None:
    import os

    mask = os.umask(0o022)
    try:
        (tmp_path / "source.bin").write_bytes(b"abc")
        target = tmp_path / "cache" / "entry"
        with staged_folder(target) as tmp:
            download_file((tmp_path / "source.bin").as_uri(), tmp / "weights" / "a.bin", progress=False)
    finally:
        os.umask(mask)
    assert (target.stat().st_mode & 0o777, (target / "weights").stat().st_mode & 0o777) == (0o755, 0o755)
    assert (target / "weights" / "a.bin").stat().st_mode & 0o777 == 0o644
