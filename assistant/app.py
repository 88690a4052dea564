"""The Gradio chat app: a thin layer that turns widget values into session calls and back.

Per-person state (the conversation, the results shown, the selected result) lives in `gr.State`,
so several people using one server never see each other's searches, uploads or feedback. Pictures
are served only as resized copies from `MediaCache` (see media.py); no original path reaches Gradio.

Every action is a named API endpoint: `/send`, `/thumbs_up`, `/thumbs_down`, `/more_like`, `/reset`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr

from assistant.conversation import QueryState
from assistant.media import MediaCache, UploadLimits, UploadRejected, open_upload

log = logging.getLogger(__name__)

EMPTY_BOX = {"text": "", "files": []}
HINT = "Ask for photos (“show me cats”), then refine: “but outdoors”, “not the black ones”, “start over”."
PICK = "Click a result to see it larger, then like it, hide it or ask for more like it."

CSS = """
#results .caption-label { font-size: 0.8em; }
#detail-info { min-height: 6em; }
"""


@dataclass
class AppConfig:
    """Settings of the web app, built once at the entry point (the CLI)."""

    #: thumbnails and previews go in its `media` subfolder, the only folder the server may read from
    cache_dir: Path
    title: str = "imgchat"
    uploads: UploadLimits = field(default_factory=UploadLimits)
    thumb_px: int = 256
    preview_px: int = 1024
    #: example requests shown under the input box (the demo gallery sets them)
    examples: tuple[str, ...] = ()
    #: turns served at once per action; raise it only if the library is safe to search from many threads
    concurrency: int = 1


@dataclass
class LaunchOptions:
    """How to serve: address, public link and login. `auth` holds (user, password) pairs."""

    host: str = "127.0.0.1"
    port: int | None = None
    share: bool = False
    auth: list[tuple[str, str]] = field(default_factory=list)
    #: a self-hosted FRP share server, HOST:PORT; None uses Gradio's
    share_server: str | None = None


class ShareNeedsLogin(ValueError):
    """A public link was asked for without a login."""


class AuthSpecError(ValueError):
    """An --auth value that is neither USER:PASSWORD nor a readable file of such lines."""


def media_dir(config: AppConfig) -> Path:
    """A folder of our own under `cache_dir`, so allowing it can never expose an index or a photo."""
    return Path(config.cache_dir) / "media"


# --- per-person state ------------------------------------------------------------------------------
@dataclass
class ChatState:
    """One person's conversation: query state, the chat shown, the results shown and the one selected."""

    query: QueryState = field(default_factory=QueryState)
    messages: list[dict] = field(default_factory=list)
    results: list = field(default_factory=list)


# --- background indexing ---------------------------------------------------------------------------
class IndexJob:
    """Indexes a folder in a background thread so the app answers at once and shows progress."""

    def __init__(self, library, folder: Path):
        self.library, self.folder = library, Path(folder)
        self.done, self.total = 0, 0
        self.report = None
        self.error: str | None = None
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="imgchat-index", daemon=True)

    def start(self) -> IndexJob:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.report = self.library.index(self.folder, progress=self._progress)
        except Exception as exc:  # reported in the UI; the app keeps serving what is indexed
            log.exception("indexing %s failed", self.folder)
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished.set()

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    @property
    def running(self) -> bool:
        return not self.finished.is_set()

    def status(self) -> str:
        """One line for the status bar."""
        if self.error:
            return f"Indexing {self.folder.name} failed: {self.error}"
        if self.running:
            counted = f"{self.done} of {self.total}" if self.total else "scanning"
            return f"Indexing {self.folder.name}: {counted} photos… search covers what is indexed so far."
        report = self.report
        failed = f", {len(report.failed)} unreadable" if report and report.failed else ""
        return f"Indexed {len(self.library)} photos from {self.folder.name}{failed}."


def start_indexing(library, folder: Path) -> IndexJob:
    """Index `folder` in the background (incremental: a second run only looks at what changed)."""
    return IndexJob(library, folder).start()


# --- handlers: UI values ↔ session calls ----------------------------------------------------------
class Handlers:
    """The functions behind the widgets. They hold shared, read-only parts; per-person data comes in `ChatState`."""

    def __init__(self, session, library, media: MediaCache, config: AppConfig, job: IndexJob | None):
        self.session, self.library, self.media = session, library, media
        self.config, self.job = config, job

    # outputs of every conversation action: chatbot, gallery, results, preview, details, selected id, state, box
    def _view(self, state: ChatState) -> tuple:
        gallery = [
            (str(self.media.thumb(r.path)), f"{i}. {Path(r.path).name}")
            for i, r in enumerate(state.results, 1)
        ]
        rows = [_result_row(i, r) for i, r in enumerate(state.results, 1)]
        return state.messages, gallery, rows, None, PICK, None, state, EMPTY_BOX

    def send(self, message: dict | str | None, state: ChatState) -> tuple:
        text, files = _message_parts(message)
        user_content: list[Any] = [text] if text else []
        try:
            image = open_upload(files[0], self.config.uploads) if files else None
        except UploadRejected as exc:
            return self._say(state, user_content or ["(image)"], str(exc))
        if image is not None:
            user_content.append({"path": str(self.media.store(image, files[0]))})
        if not user_content:
            return self._say(state, [], "Type what to look for, or drop a photo to find similar ones.")
        turn = self.session.turn(state.query, text, image=image)
        return self._answer(state, user_content, turn)

    def thumbs_up(self, image_id: float | None, state: ChatState) -> tuple:
        return self._feedback(image_id, state, up=True)

    def thumbs_down(self, image_id: float | None, state: ChatState) -> tuple:
        return self._feedback(image_id, state, up=False)

    def more_like(self, image_id: float | None, state: ChatState) -> tuple:
        name = self._known(image_id)
        turn = self.session.turn(state.query, "", more_like=int(image_id))
        return self._answer(state, [f"More like {name}"], turn)

    def reset(self, state: ChatState) -> tuple:
        return self._view(ChatState())

    def select(self, state: ChatState, evt: gr.SelectData) -> tuple:
        """Gallery click → larger view, file name, date, why it matched; the buttons then act on it."""
        if evt.index is None or not 0 <= int(evt.index) < len(state.results):
            return None, PICK, None
        result = state.results[int(evt.index)]
        record = self.library.record(result.id) or {}
        return str(self.media.preview(result.path)), _details(int(evt.index) + 1, result, record), result.id

    def watch_indexing(self, progress=gr.Progress()) -> str:  # noqa: B008 (Gradio finds the bar by this default)
        """Shows a progress bar while the background indexing runs, then the final count."""
        if self.job is None:
            return f"{len(self.library)} photos indexed."
        while self.job.running:
            progress((self.job.done, self.job.total or None), desc="Indexing", unit="photos")
            time.sleep(0.5)
        return self.job.status()

    def _feedback(self, image_id: float | None, state: ChatState, up: bool) -> tuple:
        name = self._known(image_id)
        turn = self.session.feedback(state.query, int(image_id), up)
        return self._answer(state, [f"{'👍' if up else '👎'} {name}"], turn)

    def _known(self, image_id: float | None) -> str:
        """The file name of an indexed image id, or a one-line error shown to the person."""
        if image_id is None:
            raise gr.Error("Pick a result in the gallery first.", print_exception=False)
        record = self.library.record(int(image_id))
        if record is None:
            raise gr.Error(f"There is no indexed image with id {int(image_id)}.", print_exception=False)
        return Path(record["path"]).name

    def _answer(self, state: ChatState, user_content: list, turn) -> tuple:
        reply = turn.summary + self._indexing_note()
        messages = state.messages + [_message("user", user_content), _message("assistant", [reply])]
        return self._view(replace(state, query=turn.state, messages=messages, results=list(turn.results)))

    def _say(self, state: ChatState, user_content: list, reply: str) -> tuple:
        messages = state.messages + ([_message("user", user_content)] if user_content else [])
        messages = messages + [_message("assistant", [reply])]
        return self._view(replace(state, messages=messages))

    def _indexing_note(self) -> str:
        if self.job is not None and self.job.running:
            return f"\n\n_{self.job.status()}_"
        return ""


def _message_parts(message: dict | str | None) -> tuple[str, list[str]]:
    if isinstance(message, str):
        return message.strip(), []
    message = message or {}
    files = [f if isinstance(f, str) else f.get("path", "") for f in message.get("files") or []]
    return (message.get("text") or "").strip(), [f for f in files if f]


def _message(role: str, content: list) -> dict:
    return {"role": role, "content": content}


def _result_row(rank: int, result) -> dict:
    """What the API returns about a result: no server paths, only the file name."""
    return {
        "rank": rank,
        "id": int(result.id),
        "name": Path(result.path).name,
        "score": round(float(result.score), 4),
        "why": result.explanation,
    }


def _details(rank: int, result, record: dict) -> str:
    lines = [f"**#{rank} {Path(result.path).name}**"]
    if record.get("date"):
        lines.append(f"Taken {record['date']}")
    if record.get("width"):
        lines.append(f"{record['width']}×{record['height']} px")
    lines.append(f"Why: {result.explanation or 'close to your search'} (score {result.score:.3f})")
    return "  \n".join(lines)


# --- layout ----------------------------------------------------------------------------------------
def build_app(session, library, config: AppConfig, job: IndexJob | None = None) -> gr.Blocks:
    """The chat UI over one library. `job` (from `start_indexing`) adds a progress bar while indexing."""
    media = MediaCache(media_dir(config), config.thumb_px, config.preview_px, roots=lambda: library.roots)
    handlers = Handlers(session, library, media, config, job)
    with gr.Blocks(title=config.title, analytics_enabled=False, delete_cache=(3600, 6 * 3600)) as demo:
        # API clients never close a tab, so their conversations expire after a day of silence
        state = gr.State(ChatState(), time_to_live=24 * 3600)
        widgets = _layout(config)
        _wire(demo, handlers, state, widgets)
    demo.queue(default_concurrency_limit=config.concurrency)
    return demo


def _layout(config: AppConfig) -> dict:
    w: dict = {}
    gr.Markdown(f"## {config.title} — search your photos by talking to them")
    with gr.Row():
        with gr.Column(scale=5):
            w["chat"] = gr.Chatbot(
                label="Conversation",
                height=520,
                buttons=["copy", "copy_all"],
                allow_file_downloads=False,
                placeholder=HINT,
                elem_id="chat",
            )
            w["box"] = gr.MultimodalTextbox(
                placeholder="Describe what to find, or drop a photo to find similar ones…",
                file_types=["image"],
                file_count="single",
                sources=["upload"],
                show_label=False,
                elem_id="box",
            )
            if config.examples:
                gr.Examples(
                    [[{"text": text, "files": []}] for text in config.examples], [w["box"]], label="Try"
                )
            with gr.Row():
                w["reset"] = gr.Button("Start over", size="sm", elem_id="reset")
                w["status"] = gr.Markdown("", elem_id="status")
        with gr.Column(scale=7):
            w["gallery"] = gr.Gallery(
                label="Results",
                columns=5,
                height=520,
                allow_preview=False,
                object_fit="cover",
                buttons=[],
                elem_id="results",
            )
            with gr.Row():
                w["preview"] = gr.Image(label="Selected", interactive=False, height=300, elem_id="preview")
                with gr.Column():
                    w["info"] = gr.Markdown(PICK, elem_id="detail-info")
                    w["selected"] = gr.Number(label="image id", precision=0, visible=False)
                    with gr.Row():
                        w["up"] = gr.Button("👍 Like", size="sm", elem_id="up")
                        w["down"] = gr.Button("👎 Not this", size="sm", elem_id="down")
                        w["more"] = gr.Button("More like this", size="sm", elem_id="more")
            w["rows"] = gr.JSON(label="Results (data)", visible=False)
    return w


API_DOCS = {
    "send": "One chat turn: {'text': ..., 'files': [one image]} → conversation, gallery, results "
    "([{rank, id, name, score, why}]), then UI fields. Text refines the search; an image alone finds similar ones.",
    "thumbs_up": "Thumbs up on a result id: pulls the search towards it. Returns what /send returns.",
    "thumbs_down": "Thumbs down on a result id: pushes away from it and hides it until /reset.",
    "more_like": "More like a result id (same as thumbs up, said as a turn in the conversation).",
    "reset": "Start over: forget the conversation, the feedback and the results.",
}


def _wire(demo: gr.Blocks, h: Handlers, state: gr.State, w: dict) -> None:
    view = [w["chat"], w["gallery"], w["rows"], w["preview"], w["info"], w["selected"], state, w["box"]]
    actions = (
        (w["box"].submit, h.send, [w["box"], state], "send"),
        (w["up"].click, h.thumbs_up, [w["selected"], state], "thumbs_up"),
        (w["down"].click, h.thumbs_down, [w["selected"], state], "thumbs_down"),
        (w["more"].click, h.more_like, [w["selected"], state], "more_like"),
        (w["reset"].click, h.reset, [state], "reset"),
    )
    for event, fn, inputs, name in actions:
        event(fn, inputs, view, api_name=name, api_description=API_DOCS[name])
    w["chat"].clear(h.reset, [state], view, api_visibility="private")
    w["gallery"].select(h.select, [state], [w["preview"], w["info"], w["selected"]], api_visibility="private")
    demo.load(h.watch_indexing, None, w["status"], concurrency_limit=None, api_visibility="private")


# --- serving ---------------------------------------------------------------------------------------
@dataclass
class Served:
    """A running server: its addresses and one-line notes for the person who started it."""

    demo: gr.Blocks
    local_url: str
    share_url: str | None
    notes: list[str]
    job: IndexJob | None = None

    def wait(self) -> None:
        """Block until Ctrl-C, then stop the server."""
        self.demo.block_thread()

    def close(self) -> None:
        self.demo.close()


def parse_auth(spec: str) -> list[tuple[str, str]]:
    """`USER:PASSWORD`, or the path of a file with one `user:password` per line (blank and # lines skipped)."""
    path = Path(spec).expanduser()
    lines = path.read_text().splitlines() if path.is_file() else [spec]
    pairs = []
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not (sep and user and password):
            raise AuthSpecError(f"--auth wants USER:PASSWORD or a file of user:password lines, not {spec!r}")
        pairs.append((user, password))
    if not pairs:
        raise AuthSpecError(f"no user:password lines in {spec}")
    return pairs


def check_share(options: LaunchOptions) -> None:
    """Refuse a public link without a login, before anything starts."""
    if options.share and not options.auth:
        raise ShareNeedsLogin(
            "--share makes your photos public, so it needs a login: add --auth USER:PASSWORD "
            "or --auth FILE (one user:password per line)"
        )


def serve(session, library, config: AppConfig, options: LaunchOptions, folder: Path | None = None) -> Served:
    """What `imgchat serve` does: index `folder` in the background (if given), build the app, serve it."""
    check_share(options)
    job = start_indexing(library, folder) if folder is not None else None
    served = launch(build_app(session, library, config, job), options, config)
    served.job = job
    return served


def launch(demo: gr.Blocks, options: LaunchOptions, config: AppConfig) -> Served:
    """Start serving without blocking; call `Served.wait()` to block.

    A public link (`share`) needs a login. When the tunnel cannot be made (offline), the app keeps
    serving locally and `notes` says so in one line; Gradio's own multi-line advice is swallowed.
    """
    check_share(options)
    with contextlib.redirect_stdout(io.StringIO()):
        demo.launch(
            server_name=options.host,
            server_port=options.port,
            share=options.share,
            auth=options.auth or None,
            share_server_address=options.share_server,
            prevent_thread_lock=True,
            quiet=True,
            show_error=True,
            # only resized copies live there; Gradio refuses to hand out files outside allowed folders
            allowed_paths=[str(media_dir(config))],
            max_file_size=config.uploads.max_bytes,
            ssr_mode=False,
            run_history=False,  # it would keep (and offer to upload) everyone's searches
            footer_links=["api", "settings"],
            css=CSS,
        )
    notes = []
    if options.share and not demo.share_url:
        notes.append(f"No public link could be made (offline?); serving only at {demo.local_url}")
    return Served(demo, demo.local_url, demo.share_url, notes)
