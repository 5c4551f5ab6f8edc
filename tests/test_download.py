"""Downloads against a local HTTP server started here: checksums, partial files, Range resume, offline."""
from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from mmvae.data.sources.cache import DataSource, RemoteFile, cache_root, present_or_fetch
from mmvae.data.sources.download import DownloadError, fetch
from mmvae.errors import UserError

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes: several read chunks


class Server:
    """Serves PAYLOAD at /data.bin. ``mode``: full | truncate (sends half, then closes) | norange."""

    def __init__(self):
        self.mode = "full"
        self.ranges: list[str | None] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/data.bin":
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                owner.ranges.append(rng)
                start = 0
                if rng and owner.mode != "norange":
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(PAYLOAD):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if owner.mode == "truncate":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data.bin"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


MD5 = "md5:" + hashlib.md5(PAYLOAD).hexdigest()
SHA = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()


@pytest.mark.parametrize("checksum", [MD5, SHA])
def test_fetch_verifies_and_renames(server, tmp_path, checksum):
    out = fetch(server.url, tmp_path / "data.bin", checksum, show_progress=False)
    assert out.read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin.part").exists()


def test_checksum_mismatch_is_detected_and_nothing_is_kept(server, tmp_path):
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DownloadError, match="does not match"):
        fetch(server.url, tmp_path / "data.bin", wrong, show_progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a partial file


def test_interrupted_download_never_passes_for_data_and_resumes(server, tmp_path):
    server.mode = "truncate"
    target = tmp_path / "data.bin"
    with pytest.raises(DownloadError):
        fetch(server.url, target, MD5, show_progress=False)
    part = tmp_path / "data.bin.part"
    assert not target.exists() and part.exists() and part.stat().st_size == len(PAYLOAD) // 2
    server.mode = "full"
    fetch(server.url, target, MD5, show_progress=False)
    assert server.ranges[-1] == f"bytes={len(PAYLOAD) // 2}-"  # resumed, not restarted
    assert target.read_bytes() == PAYLOAD and not part.exists()


def test_server_without_range_restarts_cleanly(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(b"garbage that is not a prefix")
    server.mode = "norange"
    fetch(server.url, tmp_path / "data.bin", MD5, show_progress=False)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_second_mirror_is_tried(server, tmp_path):
    dead = server.url.replace("/data.bin", "/missing.bin")
    fetch([dead, server.url], tmp_path / "data.bin", MD5, show_progress=False)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_present_or_fetch_downloads_into_cache_then_works_offline(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MMVAE_DATA", str(tmp_path / "cache"))
    assert cache_root() == tmp_path / "cache"
    source = DataSource("demo", (RemoteFile("data.bin", MD5, (server.url,)),), homepage="http://example.invalid/")
    paths = present_or_fetch(source)
    assert paths["data.bin"] == tmp_path / "cache" / "demo" / "data.bin"
    server.close()  # offline from now on: the cached file is used
    assert present_or_fetch(source)["data.bin"].read_bytes() == PAYLOAD


def test_offline_message_names_files_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MMVAE_DATA", str(tmp_path / "cache"))
    # A closed local port: the connection is refused at once, like a machine without network.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    source = DataSource("demo", (RemoteFile("a.gz", MD5, (f"http://127.0.0.1:{port}/a.gz",)),),
                        homepage="http://example.invalid/")
    with pytest.raises(UserError) as e:
        present_or_fetch(source)
    msg = str(e.value)
    assert "a.gz" in msg and str(tmp_path / "cache" / "demo") in msg and "download failed" in msg
    assert not any(p.name == "a.gz" for p in Path(tmp_path).rglob("*"))
    with pytest.raises(UserError, match="used as is"):
        present_or_fetch(source, data_dir=tmp_path)  # --data-dir never downloads
