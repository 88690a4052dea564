"""The chat app for real: a Gradio server over a real library (fake embedder, real FAISS, real Pillow
images), driven over HTTP by gradio_client as a second person would drive it.

The fake embedder maps an image to its dominant colour, so "red" must bring the red photos first.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import COLOURS, make_image
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from assistant.app import (
    AppConfig,
    AuthSpecError,
    ChatState,
    Handlers,
    IndexJob,
    LaunchOptions,
    ShareNeedsLogin,
    build_app,
    launch,
    parse_auth,
    serve,
    start_indexing,
)
from assistant.demo import PHOTOS, prepare_demo
from assistant.media import MediaCache, UploadLimits, UploadRejected, open_upload
from assistant.session import Session
from retrieval.library import Library, LibraryConfig

PER_COLOUR = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    root: Path
    #: Gradio's upload and cache folder (one per test run: Gradio reads it from the environment)
    cache: Path
    photos: Path
    library: Library
    served: object


def start_server(
    root: Path,
    options: LaunchOptions | None = None,
    per_colour: int = PER_COLOUR,
    k: int = 12,
    size: tuple[int, int] = (64, 48),
    **config,
) -> Server:
    """A running app over generated photos (`per_colour` of each colour); the caller closes `served` and `library`."""
    photos = root / "photos"
    for name, rgb in COLOURS.items():
        for n in range(per_colour):
            make_image(photos / f"{name}-{n}.jpg", rgb, size=(size[0] + n, size[1]))
    cache = Path(os.environ.setdefault("GRADIO_TEMP_DIR", str(root / "gradio-cache")))
    library = Library.open(root / "index", LibraryConfig(embedder="fake"))
    library.index(photos)
    app_config = AppConfig(cache_dir=root / "media", **config)
    options = options or LaunchOptions()
    options.port = options.port or free_port()
    served = launch(build_app(Session(library, k=k), library, app_config), options, app_config)
    return Server(served.local_url, root, cache, photos, library, served)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    limits = UploadLimits(max_bytes=300_000, max_megapixels=1.0)
    srv = start_server(tmp_path_factory.mktemp("app"), uploads=limits)
    yield srv
    srv.served.close()
    srv.library.close()


@pytest.fixture
def client(server):
    return Client(server.url, verbose=False)


def names(rows: list[dict]) -> list[str]:
    return [row["name"] for row in rows]


def last_reply(chat: list[dict]) -> str:
    return chat[-1]["content"][0]["text"]


def send(client: Client, text: str = "", image: Path | None = None):
    files = [handle_file(str(image))] if image else []
    return client.predict({"text": text, "files": files}, api_name="/send")


# --- the conversation over HTTP ---------------------------------------------------------------------
@pytest.mark.slow
def test_two_turn_conversation_refines_results_and_says_what_was_searched(client):
    chat, gallery, rows, *_ = send(client, "show me red")
    assert all(n.startswith("red-") for n in names(rows)[:PER_COLOUR])
    assert "red" in last_reply(chat)
    assert len(gallery) == len(rows) and Path(gallery[0]["image"]).is_file()

    chat, _, rows, *_ = send(client, "actually blue instead")
    assert all(n.startswith("blue-") for n in names(rows)[:PER_COLOUR])
    assert "blue" in last_reply(chat) and len(chat) == 4


@pytest.mark.slow
def test_thumbs_down_hides_an_image_and_thumbs_up_pulls_towards_it(client):
    _, _, rows, *_ = send(client, "show me green")
    first = rows[0]
    chat, _, rows, *_ = client.predict(first["id"], api_name="/thumbs_down")
    assert first["name"] not in names(rows)
    assert "👎 " + first["name"] in chat[-2]["content"][0]["text"]

    yellow = next(row for row in rows if row["name"].startswith("yellow-"))
    _, _, rows, *_ = client.predict(yellow["id"], api_name="/thumbs_up")
    assert rows[0]["name"] == yellow["name"]


@pytest.mark.slow
def test_uploaded_photo_finds_similar_ones_and_shows_in_the_chat(client, tmp_path):
    example = make_image(tmp_path / "my-blue.png", COLOURS["blue"], size=(80, 60))
    chat, _, rows, *_ = send(client, "", example)
    assert all(n.startswith("blue-") for n in names(rows)[:PER_COLOUR])
    user = chat[-2]
    assert user["role"] == "user" and user["content"][0]["type"] == "file"
    assert Image.open(user["content"][0]["file"]).size[0] <= 256


@pytest.mark.slow
def test_more_like_this_and_reset(client):
    _, _, rows, *_ = send(client, "show me red")
    yellow = next(row for row in rows if row["name"].startswith("yellow-"))
    chat, _, rows, *_ = client.predict(yellow["id"], api_name="/more_like")
    others = [n for n in names(rows) if not n.startswith("red-")]
    assert others[0] == yellow["name"] and all(n.startswith("yellow-") for n in others[:PER_COLOUR])
    assert yellow["name"] in chat[-2]["content"][0]["text"]

    chat, gallery, rows, *_ = client.predict(api_name="/reset")
    assert chat == [] and gallery == [] and rows == []


@pytest.mark.slow
def test_feedback_on_an_unknown_id_is_a_clear_error_and_the_session_goes_on(client):
    send(client, "show me red")
    with pytest.raises(AppError, match="no indexed image with id 99999"):
        client.predict(99999, api_name="/thumbs_up")
    client.predict(api_name="/reset")
    _, _, rows, *_ = send(client, "show me yellow")
    assert names(rows)[0].startswith("yellow-")


@pytest.mark.slow
def test_ten_simultaneous_sessions_get_their_own_answers(server):
    colours = list(COLOURS) * 3
    outcomes: dict[int, tuple] = {}

    def converse(i: int) -> None:
        client = Client(server.url, verbose=False)
        _, _, rows, *_ = send(client, f"show me {colours[i]}")
        chat, _, rows, *_ = client.predict(rows[0]["id"], api_name="/thumbs_down")
        outcomes[i] = (chat, rows[0])

    threads = [threading.Thread(target=converse, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcomes) == list(range(10))
    for i, (chat, top) in outcomes.items():
        assert len(chat) == 4, "a conversation saw another session's messages"
        assert chat[0]["content"][0]["text"] == f"show me {colours[i]}"
        assert top["name"].startswith(colours[i] + "-")


# --- uploads that must not break a session ----------------------------------------------------------
@pytest.mark.slow
def test_upload_with_too_many_pixels_is_refused_in_words(client, tmp_path):
    big = tmp_path / "huge.png"
    Image.new("RGB", (1500, 1000), COLOURS["red"]).save(big)  # 1.5 MP, small file, over the 1 MP limit
    chat, _, rows, *_ = send(client, "", big)
    assert "too large to process" in last_reply(chat) and rows == []
    _, _, rows, *_ = send(client, "show me green")
    assert names(rows)[0].startswith("green-")


@pytest.mark.slow
def test_non_image_upload_is_refused_in_words(client, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is not a picture")
    chat, *_ = send(client, "red", fake)
    assert "not an image" in last_reply(chat)


@pytest.mark.slow
def test_upload_over_the_size_limit_is_rejected_before_it_lands(client, tmp_path):
    noisy = tmp_path / "noisy.png"
    Image.effect_noise((400, 400), 100).convert("RGB").save(noisy)  # ~470 KB, over the 300 KB limit
    assert noisy.stat().st_size > 300_000
    with pytest.raises(ValueError, match="exceeds the maximum file size of 300000 bytes"):
        send(client, "", noisy)
    _, _, rows, *_ = send(client, "show me blue")
    assert names(rows)[0].startswith("blue-")


# --- background indexing ----------------------------------------------------------------------------
def test_background_indexing_reports_progress_then_the_count(tmp_path, photo_folder):
    library = Library.open(tmp_path / "index", LibraryConfig(embedder="fake"))
    seen: list[tuple[int, int]] = []
    job = IndexJob(library, photo_folder)
    job._progress = lambda done, total: seen.append((done, total))  # record every callback
    job.start().finished.wait(60)
    assert seen and seen[-1][0] == seen[-1][1] == 8
    assert job.status() == "Indexed 8 photos from photos."
    library.close()


def test_a_turn_during_indexing_says_results_are_partial(tmp_path, photo_folder):
    library = Library.open(tmp_path / "index", LibraryConfig(embedder="fake"))
    job = IndexJob(library, photo_folder)  # not started: still "running" as far as the UI can tell
    job.done, job.total = 3, 8
    handlers = Handlers(
        Session(library), library, MediaCache(tmp_path / "media"), AppConfig(tmp_path / "m"), job
    )
    chat = handlers.send({"text": "show me red", "files": []}, ChatState())[0]
    assert "Indexing photos: 3 of 8 photos" in chat[-1]["content"][0]
    job.start().finished.wait(60)
    chat = handlers.send({"text": "show me red", "files": []}, ChatState())[0]
    assert "Indexing" not in chat[-1]["content"][0]
    library.close()


def test_progress_bar_follows_the_indexing_until_it_ends(tmp_path, photo_folder):
    library = Library.open(tmp_path / "index", LibraryConfig(embedder="fake"))
    job = IndexJob(library, photo_folder)
    handlers = Handlers(
        Session(library), library, MediaCache(tmp_path / "media"), AppConfig(tmp_path / "m"), job
    )
    calls = []
    threading.Timer(0.7, job.start).start()
    status = handlers.watch_indexing(progress=lambda value, **kw: calls.append((value, kw["desc"])))
    assert status == "Indexed 8 photos from photos." and not job.running
    assert calls and calls[0] == ((0, None), "Indexing")
    library.close()


def test_serve_indexes_the_demo_gallery_in_the_background_and_answers(tmp_path):
    folder = prepare_demo(tmp_path / "demo")
    library = Library.open(tmp_path / "index", LibraryConfig(embedder="fake"))
    config = AppConfig(cache_dir=tmp_path / "media")
    served = serve(Session(library), library, config, LaunchOptions(port=free_port()), folder)
    try:
        assert served.job.finished.wait(60) and served.job.error is None
        assert len(library) == len(list(folder.glob("*.jpg")))
        chat, gallery, rows, *_ = send(Client(served.local_url, verbose=False), "show me yellow")
        assert rows and len(gallery) == len(rows) and "result" in last_reply(chat)
    finally:
        served.close()
        library.close()


def test_start_indexing_runs_in_the_background(tmp_path, photo_folder):
    library = Library.open(tmp_path / "index", LibraryConfig(embedder="fake"))
    job = start_indexing(library, photo_folder)
    assert job.finished.wait(60) and job.error is None and len(library) == 8
    library.close()


# --- login and public links -------------------------------------------------------------------------
def test_parse_auth_accepts_a_pair_or_a_file(tmp_path):
    assert parse_auth("ann:s3cret:with:colons") == [("ann", "s3cret:with:colons")]
    users = tmp_path / "users.txt"
    users.write_text("# team\nann:one\n\nbob:two\n")
    assert parse_auth(str(users)) == [("ann", "one"), ("bob", "two")]
    with pytest.raises(AuthSpecError, match="USER:PASSWORD"):
        parse_auth("just-a-name")


def test_share_without_login_is_refused_with_how_to_add_one(tmp_path):
    config = AppConfig(cache_dir=tmp_path)
    with pytest.raises(ShareNeedsLogin, match="add --auth USER:PASSWORD or --auth FILE"):
        launch(None, LaunchOptions(share=True), config)


# --- media: only resized copies are served ----------------------------------------------------------
def test_thumbnails_are_small_cached_and_refreshed_when_the_photo_changes(tmp_path):
    photo = make_image(tmp_path / "p.jpg", COLOURS["red"], size=(1200, 800))
    media = MediaCache(tmp_path / "media", thumb_px=256, preview_px=600)
    thumb = media.thumb(photo)
    assert Image.open(thumb).size == (256, 171) and thumb.is_relative_to(tmp_path / "media")
    assert max(Image.open(media.preview(photo)).size) == 600
    assert media.thumb(photo) == thumb
    make_image(photo, COLOURS["blue"], size=(900, 900))
    os.utime(photo, ns=(1, 2))
    assert media.thumb(photo) != thumb and Image.open(media.thumb(photo)).size == (256, 256)


def test_a_vanished_or_broken_photo_gets_the_placeholder(tmp_path):
    media = MediaCache(tmp_path / "media")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    assert media.thumb(tmp_path / "gone.jpg") == media.placeholder()
    assert media.thumb(broken) == media.placeholder()


def test_open_upload_limits(tmp_path):
    ok = make_image(tmp_path / "ok.png", COLOURS["green"], size=(100, 80))
    assert open_upload(ok).size == (100, 80) and open_upload(ok).mode == "RGB"
    with pytest.raises(UploadRejected, match="ok.png was not used: too large to process"):
        open_upload(ok, UploadLimits(max_megapixels=0.005))
    with pytest.raises(UploadRejected, match="over the 0 MB limit"):
        open_upload(ok, UploadLimits(max_bytes=100))
    with pytest.raises(UploadRejected, match="could not be read"):
        open_upload(tmp_path / "missing.png")


# --- the demo gallery -------------------------------------------------------------------------------
def test_demo_gallery_copies_real_photos_from_installed_packages(tmp_path):
    folder = prepare_demo(tmp_path / "demo")
    photos = sorted(folder.glob("*.jpg"))
    assert len(photos) >= 5, "gradio alone ships five of the demo photos"
    for photo in photos:
        with Image.open(photo) as image:
            assert min(image.size) >= 200
    credits = (folder / "CREDITS.txt").read_text()
    assert all(p.name in credits for p in photos) and {p.name for p in PHOTOS} >= {p.name for p in photos}
