"""Public-dataset download path, against zips built here and served from 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from winnow.data import KNOWN_BEIR, fetch_beir, load_dataset
from winnow.errors import DatasetError


def beir_zip(name: str, extra: dict[str, bytes] | None = None) -> bytes:
    files = {
        f"{name}/corpus.jsonl": b'{"_id": "d1", "title": "T", "text": "wing lift"}\n{"_id": "d2", "text": "flow"}\n',
        f"{name}/queries.jsonl": b'{"_id": "q1", "text": "lift"}\n',
        f"{name}/qrels/test.tsv": b"query-id\tcorpus-id\tscore\nq1\td1\t1\n",
    }
    files.update(extra or {})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return buf.getvalue()


class Server:
    """A real HTTP server on 127.0.0.1 serving fixed bodies and counting requests per path."""

    def __init__(self, routes: dict[str, bytes]):
        self.routes = routes
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server(
        {"/toy.zip": beir_zip("toy"), "/evil.zip": beir_zip("evil", {"../escape.txt": b"x"})}
    )
    yield s
    s.close()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verify_extract_and_cache(server, tmp_path):
    body = server.routes["/toy.zip"]
    sha = hashlib.sha256(body).hexdigest()
    md5 = hashlib.md5(body).hexdigest()
    cache = tmp_path / "cache"
    folder = fetch_beir("toy", cache, url=server.base + "/toy.zip", sha256=sha, md5=md5)
    assert folder == cache / "toy"
    assert (folder / "corpus.jsonl").is_file() and (folder / "qrels" / "test.tsv").is_file()
    assert server.hits == {"/toy.zip": 1}
    assert leftovers(cache) == ["toy"]  # no partial download or staging folder left
    # second call: served from the cache, no request
    assert fetch_beir("toy", cache, url=server.base + "/toy.zip", sha256=sha) == folder
    ds = load_dataset("toy", cache_dir=cache, url=server.base + "/toy.zip", sha256=sha)
    assert server.hits == {"/toy.zip": 1}
    assert ds.name == "toy" and ds.qrels == {"q1": {"d1": 1}} and ds.corpus["d1"].title == "T"


def test_load_dataset_downloads_on_first_use(server, tmp_path):
    ds = load_dataset("toy", cache_dir=tmp_path, url=server.base + "/toy.zip")
    assert len(ds.corpus) == 2 and server.hits == {"/toy.zip": 1}
    assert load_dataset("toy", cache_dir=tmp_path).queries == {"q1": "lift"}
    assert server.hits == {"/toy.zip": 1}


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(DatasetError, match="sha256 mismatch") as info:
        fetch_beir("toy", tmp_path, url=server.base + "/toy.zip", sha256="0" * 64)
    assert hashlib.sha256(server.routes["/toy.zip"]).hexdigest() in str(info.value)
    with pytest.raises(DatasetError, match="md5 mismatch"):
        fetch_beir("toy", tmp_path, url=server.base + "/toy.zip", md5="0" * 32)
    assert leftovers(tmp_path) == []


def test_cached_copy_with_other_checksum_is_fetched_again(server, tmp_path):
    fetch_beir("toy", tmp_path, url=server.base + "/toy.zip")
    server.routes["/toy.zip"] = new = beir_zip("toy", {"toy/qrels/dev.tsv": b"q1\t0\td2\t1\n"})
    fetch_beir(
        "toy", tmp_path, url=server.base + "/toy.zip", sha256=hashlib.sha256(new).hexdigest()
    )
    assert server.hits["/toy.zip"] == 2 and (tmp_path / "toy" / "qrels" / "dev.tsv").is_file()


def test_http_error_and_unreachable_host(server, tmp_path):
    with pytest.raises(DatasetError, match="HTTP 404"):
        fetch_beir("missing", tmp_path, url=server.base + "/missing.zip")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DatasetError, match=r"download of .* failed"):
        fetch_beir("toy", tmp_path, url=f"http://127.0.0.1:{port}/toy.zip", timeout=5)
    assert leftovers(tmp_path) == []


def test_path_traversal_is_refused(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match=re.escape("unsafe path '../escape.txt'")):
        fetch_beir("evil", cache, url=server.base + "/evil.zip")
    assert not (tmp_path / "escape.txt").exists() and leftovers(cache) == []


def test_not_a_zip(server, tmp_path):
    server.routes["/junk.zip"] = b"this is not a zip"
    with pytest.raises(DatasetError, match="not a valid zip"):
        fetch_beir("junk", tmp_path, url=server.base + "/junk.zip")
    assert leftovers(tmp_path) == []


def test_unknown_name_without_url(tmp_path):
    with pytest.raises(DatasetError, match=r"unknown public dataset 'nope'.*scifact"):
        fetch_beir("nope", tmp_path)


def test_known_table():
    for name in ("scifact", "nfcorpus", "fiqa", "arguana", "scidocs", "trec-covid"):
        entry = KNOWN_BEIR[name]
        assert (
            entry.url
            == f"https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
        )
        assert entry.md5 is not None and len(entry.md5) == 32
        assert entry.sha256 is None or len(entry.sha256) == 64
    assert json.dumps(sorted(KNOWN_BEIR))  # names are plain strings


def test_cli_fetch_then_check(server, tmp_path, capsys):
    from winnow.cli import main

    body = server.routes["/toy.zip"]
    cache = str(tmp_path / "cache")
    url = server.base + "/toy.zip"
    sha = hashlib.sha256(body).hexdigest()
    assert main(["data", "fetch", "toy", "--url", url, "--sha256", sha, "--cache-dir", cache]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cache" / "toy")
    assert main(["data", "check", "toy", "--cache-dir", cache, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["documents"] == 2 and summary["judgments"] == 1
    assert (
        main(
            [
                "data",
                "fetch",
                "toy",
                "--url",
                url,
                "--sha256",
                "0" * 64,
                "--cache-dir",
                str(tmp_path / "c2"),
            ]
        )
        == 2
    )
    assert "sha256 mismatch" in capsys.readouterr().err
    assert server.hits == {"/toy.zip": 2}


def test_extract_refuses_oversized_and_symlinked_archives(tmp_path):
    from winnow.data.download import safe_extract

    archive = tmp_path / "a.zip"
    archive.write_bytes(beir_zip("toy"))
    with pytest.raises(DatasetError, match="more than the limit of 10"):
        safe_extract(archive, tmp_path / "out", max_bytes=10)
    link = zipfile.ZipInfo("toy/link")
    link.external_attr = 0o120777 << 16  # a symbolic link entry
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link 'toy/link'"):
        safe_extract(archive, tmp_path / "out2")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
