"""Nothing outside the app's own resized copies and the person's uploads can be read through the server.

Raw HTTP requests (sent byte for byte with http.client, so no client normalises `..` away) try path
traversal, encoded dots, absolute paths, symlinks that lead out, the original photos, and uploads
that name a server file. A real server with a login and a public link that cannot be made (there is
no tunnel here) checks the login and the offline fallback.
"""

from __future__ import annotations

import http.client
import os
import tempfile
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from conftest import COLOURS, make_image
from gradio_client import Client
from PIL import Image
from test_app import free_port, send, start_server

from assistant.app import LaunchOptions

pytestmark = pytest.mark.slow

SECRET_TEXT = b"TOP-SECRET-do-not-serve"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("secure")
    outside = root / "outside"
    (outside / "secret.txt").parent.mkdir(parents=True)
    (outside / "secret.txt").write_bytes(SECRET_TEXT)
    make_image(outside / "secret.jpg", COLOURS["red"], size=(70, 50))
    (root / "photos").mkdir()
    (root / "photos" / "link-out.jpg").symlink_to(outside / "secret.jpg")
    srv = start_server(root)
    cache = srv.cache / f"attack-{os.getpid()}"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "evil.txt").symlink_to(outside / "secret.txt")
    (cache / "evil-dir").symlink_to(outside, target_is_directory=True)
    client = Client(srv.url, verbose=False)
    send(client, "show me red")  # puts thumbnails into Gradio's cache
    yield srv
    srv.served.close()
    srv.library.close()


def get(url: str, raw_path: str) -> tuple[int, bytes]:
    """GET exactly `raw_path` (no normalisation of dots or escapes)."""
    host, port = url.split("//")[1].strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("GET", raw_path, skip_accept_encoding=True)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def secrets(root: Path) -> list[bytes]:
    """Bytes that must never come back: the secret files and every original photo."""
    photos = [p.read_bytes() for p in (root / "photos").glob("*.jpg")]
    return [SECRET_TEXT, (root / "outside" / "secret.jpg").read_bytes(), *photos]


def attack_paths(server) -> list[str]:
    root = server.root
    cache, outside, photo = (
        server.cache / f"attack-{os.getpid()}",
        root / "outside",
        root / "photos" / "red-0.jpg",
    )
    secret = outside / "secret.txt"
    relative = os.path.relpath(secret)
    targets = [
        str(secret),
        str(photo),
        str(root / "photos" / "link-out.jpg"),
        relative,
        f"{cache}/../outside/secret.txt",
        f"{cache}/%2e%2e/outside/secret.txt",
        f"{cache}/%2E%2E%2Foutside%2Fsecret.txt",
        f"{cache}/..%2foutside%2fsecret.txt",
        f"{cache}/%252e%252e/outside/secret.txt",
        f"{cache}/..\\outside\\secret.txt",
        f"{cache}/evil.txt",
        f"{cache}/evil-dir/secret.txt",
        f"{cache}/evil-dir/secret.jpg",
        quote(str(secret), safe=""),
        "file://" + str(secret),
        "/etc/passwd",
        "../../../../../../../../etc/passwd",
    ]
    paths = []
    for target in targets:
        for prefix in ("/gradio_api/file=", "/file=", "/gradio_api/file/", "/static/", "/assets/"):
            paths.append(prefix + target)
    paths += [
        "/" + "../" * 12 + "etc/passwd",
        "/%2e%2e/" * 12 + "etc/passwd",
        f"/static/..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2f{str(secret).lstrip('/')}",
        f"/gradio_api/file=http://127.0.0.1:{free_port()}/secret.txt",
    ]
    return paths


def test_no_route_serves_anything_outside(server):
    leaks = []
    for path in attack_paths(server):
        status, body = get(server.url, path)
        if status == 200 and any(secret in body for secret in secrets(server.root)):
            leaks.append(path)
        if "/etc/passwd" in path and b"root:x:0:0" in body:
            leaks.append(path)
    assert leaks == []


def test_served_files_are_small_copies_never_originals(server):
    """Positive control: what the app put in Gradio's cache is served, and it is only resized copies."""
    cached = [p for p in server.cache.rglob("*.jpg") if not p.is_symlink() and "attack-" not in str(p)]
    assert cached, "a search should have put thumbnails in Gradio's cache"
    originals = secrets(server.root)
    for path in cached:
        status, body = get(server.url, "/gradio_api/file=" + str(path))
        assert status == 200 and body == path.read_bytes()
        assert body not in originals
        assert max(Image.open(path).size) <= 1024


def test_the_media_cache_serves_only_resized_copies(server):
    """The app's own cache folder is the one allowed folder: everything in it is a small re-encoded JPEG."""
    files = [p for p in (server.root / "media").rglob("*") if p.is_file()]
    assert files
    for path in files:
        status, body = get(server.url, "/gradio_api/file=" + str(path))
        assert status == 200 and body not in secrets(server.root)
        assert path.suffix == ".jpg" and max(Image.open(path).size) <= 1024


def test_thumbnails_are_served_when_the_cache_is_outside_tmp_and_cwd(tmp_path, monkeypatch):
    """Gradio only copies files from allowed folders, the cwd or the temp dir; a user's cache is elsewhere."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-tmp"))
    (tmp_path / "system-tmp").mkdir()
    srv = start_server(tmp_path / "elsewhere")
    try:
        chat, gallery, rows, *_ = send(Client(srv.url, verbose=False), "show me red")
        assert len(gallery) == len(rows) == 12 and Path(gallery[0]["image"]).is_file()
    finally:
        srv.served.close()
        srv.library.close()


def test_the_symlink_leading_out_of_the_photo_folder_was_not_indexed(server):
    assert server.library.id_for_path(server.root / "photos" / "link-out.jpg") is None
    assert len(server.library) == 12


def call_raw(url: str, api_name: str, data: list) -> str:
    """Call an endpoint with hand-made JSON (no client uploads files for us); returns the event stream."""
    event = httpx.post(f"{url}gradio_api/call/{api_name}", json={"data": data}, timeout=30).json()["event_id"]
    return httpx.get(f"{url}gradio_api/call/{api_name}/{event}", timeout=60).text


def test_an_upload_naming_a_server_file_is_refused(server):
    for target in (server.root / "outside" / "secret.jpg", server.root / "photos" / "red-0.jpg"):
        forged = {"path": str(target), "meta": {"_type": "gradio.FileData"}}
        stream = call_raw(server.url, "send", [{"text": "", "files": [forged]}])
        assert "event: error" in stream and "event: complete" not in stream
    stream = call_raw(server.url, "send", [{"text": "show me green", "files": []}])
    assert "event: complete" in stream and "green-0.jpg" in stream


def test_results_name_files_but_never_reveal_server_paths(server):
    client = Client(server.url, verbose=False)
    chat, _, rows, *_ = send(client, "show me blue")
    text = repr(rows) + repr([m["content"] for m in chat if m["role"] == "assistant"])
    assert str(server.root) not in text and rows[0]["name"] == Path(rows[0]["name"]).name


# --- login and public link -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """--share with --auth where no tunnel can be made: it must keep serving locally, behind the login."""
    closed = free_port()  # nothing listens there, so the share server is unreachable even with internet
    options = LaunchOptions(share=True, auth=[("ann", "pw-1")], share_server=f"127.0.0.1:{closed}")
    srv = start_server(tmp_path_factory.mktemp("shared"), options)
    yield srv
    srv.served.close()
    srv.library.close()


def test_share_offline_keeps_serving_locally_with_a_one_line_note(shared_server):
    served = shared_server.served
    assert served.share_url is None
    assert len(served.notes) == 1 and served.notes[0].startswith("No public link could be made")
    assert "\n" not in served.notes[0] and served.local_url in served.notes[0]


def test_login_is_required_for_pages_api_and_files(shared_server):
    for path in ("/config", "/gradio_api/info", "/gradio_api/queue/status"):
        status, body = get(shared_server.url, path)
        assert status in (401, 403), (path, status)
    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises different types across versions
        Client(shared_server.url, verbose=False)
    client = Client(shared_server.url, auth=("ann", "pw-1"), verbose=False)
    _, _, rows, *_ = send(client, "show me yellow")
    assert rows[0]["name"].startswith("yellow-")
    cached = next(p for p in shared_server.cache.rglob("*.jpg") if "attack-" not in str(p))
    status, _ = get(shared_server.url, "/gradio_api/file=" + str(cached))
    assert status in (401, 403)


def test_a_photo_swapped_for_a_symlink_after_indexing_is_not_read(tmp_path):
    from assistant.media import MediaCache
    from tests.conftest import make_image

    root = tmp_path / "photos"
    photo = make_image(root / "a.png", (200, 10, 10))
    secret = make_image(tmp_path / "outside" / "secret.png", (10, 200, 10))
    media = MediaCache(tmp_path / "media", roots=lambda: [str(root)])
    assert media.thumb(photo) != media.placeholder()
    photo.unlink()
    photo.symlink_to(secret)
    assert media.thumb(photo) == media.placeholder()
