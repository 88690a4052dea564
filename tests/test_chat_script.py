"""`imgchat chat --script` and the terminal REPL, on a real library (real index, fake embedder)."""

import json
import shutil
from pathlib import Path

import pytest

from assistant.chat import format_turn, repl, run_script
from assistant.conversation import QueryState
from assistant.session import HELP, Session
from retrieval.embedders.fake import COLOURS
from retrieval.library import Library, LibraryConfig
from tests.conftest import make_image


def open_library(tmp_path, folder) -> Library:
    lib = Library.open(tmp_path / "index", LibraryConfig(embedder="fake", show_progress=False))
    lib.index(folder)
    return lib


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "photos"
    for name, rgb in COLOURS.items():
        make_image(root / f"{name}-1.jpg", rgb)
        make_image(root / f"{name}-2.png", rgb, size=(40, 30))
    (root / "broken.jpg").write_bytes(b"not an image")
    return root


@pytest.fixture
def session(tmp_path, folder):
    lib = open_library(tmp_path, folder)
    yield Session(lib, k=4)
    lib.close()


def reader(lines):
    """A terminal that types `lines`, then ends the input (Ctrl-D)."""
    pending = iter(lines)

    def read(prompt: str) -> str:
        try:
            return next(pending)
        except StopIteration:
            raise EOFError from None

    return read


def script(*turns) -> list[str]:
    return [t if isinstance(t, str) else json.dumps(t) for t in turns]


def test_script_turns_give_json_with_query_searched_line_and_results(session, tmp_path):
    lines = script(
        {"text": "show me red"},
        "",
        {"text": "more like the second one"},
        {"more_like": "photos/blue-1.jpg", "text": "more like this one"},
        {"text": "actually green instead", "down": ["photos/green-2.png"]},
        {"image": "photos/yellow-2.png"},
    )
    out = list(run_script(session, lines, base=tmp_path))
    json.dumps(out)  # every output is JSON-able
    assert [o["turn"] for o in out] == [1, 2, 3, 4, 5]
    assert set(out[0]) == {"turn", "text", "query", "searched", "results"}
    assert out[0]["searched"] == "red; 4 results" and out[0]["query"]["positive"] == [["red", 1.0]]
    assert [Path(r["path"]).name.split("-")[0] for r in out[0]["results"][:2]] == ["red", "red"]
    assert {"path", "score", "explanation"} == set(out[0]["results"][0])
    assert out[1]["searched"] == "red, like #2; 4 results"
    assert len(out[2]["query"]["liked"]) == 2 and Path(out[2]["results"][0]["path"]).name.startswith(
        ("red", "blue")
    )
    assert out[3]["query"]["positive"] == [["green", 1.0]] and len(out[3]["query"]["disliked"]) == 1
    assert "green-2.png" not in [Path(r["path"]).name for r in out[3]["results"]]
    assert out[4]["searched"] == "green, like your photo; hiding 1 photo you turned down; 4 results"


def test_bad_turns_report_an_error_and_the_conversation_goes_on(session, tmp_path, folder):
    lines = script(
        {"text": "show me red"},
        {"more_like": "photos/nope.jpg", "text": "more like this"},
        {"up": ["photos/red-1.jpg", "elsewhere/x.jpg"]},
        {"image": "photos/broken.jpg", "text": "like this"},
        {"image": "photos/missing.jpg"},
        "not json at all",
        '["a", "list"]',
        {"up": 5},
        {"image": ["photos/red-1.jpg", "photos/red-2.png"]},
        {"text": "but not the blue ones"},
    )
    out = list(run_script(session, lines, base=tmp_path))
    errors = [o.get("error", "") for o in out]
    assert errors[0] == "" and errors[-1] == ""
    assert (
        errors[1] == f"more_like: {tmp_path / 'photos/nope.jpg'} is not in the index (index its folder first)"
    )
    assert errors[2] == f"up: {tmp_path / 'elsewhere/x.jpg'} is not in the index (index its folder first)"
    assert errors[3].startswith(f"image: cannot read {tmp_path / 'photos/broken.jpg'}: ")
    assert errors[4].startswith(f"image: cannot read {tmp_path / 'photos/missing.jpg'}")
    assert errors[5].startswith("not a JSON object: Expecting value at column 1")
    assert errors[6] == 'each line must be a JSON object like {"text": "show me cats"}'
    assert errors[7] == "up: expected a path or a list of paths, got 5"
    assert errors[8] == "image: expected one path, got ['photos/red-1.jpg', 'photos/red-2.png']"
    for failed in out[1:9]:
        assert failed["results"] == [] and failed["query"] == out[0]["query"]
    assert out[-1]["query"]["positive"] == [["red", 1.0]] and out[-1]["query"]["liked"] == []
    assert out[-1]["searched"] == "red; leaving out: blue red; 4 results"


def test_script_paths_default_to_the_working_directory(session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "photos")
    (out,) = run_script(session, script({"more_like": "white-1.jpg"}))
    assert "error" not in out and Path(out["results"][0]["path"]).name.startswith("white")


def test_repl_runs_turns_and_commands(session):
    inputs = reader(
        ["show me red", "/up 2", "/more 1", "/down 1", "/up 99", "/bogus", "", "/image nope.png", "/reset"]
    )
    written: list[str] = []
    state = repl(session, read=inputs, write=written.append)
    assert state == QueryState()  # /reset, then end of input
    text = "\n".join(written)
    assert HELP in written[0]
    assert "searched: red; 4 results" in written
    assert "searched: red, like #2; 4 results" in written
    assert (
        "! give a result number from 1 to 4" in written and "! unknown command /bogus; type /help" in written
    )
    assert "! image: cannot read nope.png: " in text and written[-1] == "Starting over."
    assert sum(line.startswith("  1. ") for line in written) == 4


def test_repl_quits_and_keeps_the_state(session):
    state = repl(session, read=reader(["show me blue", "/quit", "never read"]), write=lambda line: None)
    assert state.positive == (("blue", 1.0),) and len(state.shown) == 4


def test_format_turn_lists_rank_score_path_and_why(session):
    turn = session.turn(QueryState(), "show me green")
    rows = format_turn(turn)
    assert rows[0] == "searched: green; 4 results" and len(rows) == 5
    assert rows[1].startswith("  1. ") and turn.results[0].path in rows[1] and "(closest to" in rows[1]
    assert format_turn(session.turn(QueryState(), "thanks")) == [HELP]


@pytest.mark.shared
def test_dev_dialogues_with_picked_and_uploaded_images_run_as_scripts(dataset, tmp_path):
    """The real dialogues whose turns point at images run as scripts: every path resolves, no turn fails."""
    dialogues = [json.loads(line) for line in (dataset / "dialogues.jsonl").read_text().splitlines()]
    dialogues = [d for d in dialogues if any(isinstance(t, dict) for t in d["turns"])]
    photos = tmp_path / "gcompris"
    photos.mkdir()
    for path in sorted((dataset / "images").glob("*.jpg"))[::10] + [
        dataset / "images" / f"{t.get('image') or t.get('more_like')}.jpg"
        for d in dialogues
        for t in d["turns"]
        if isinstance(t, dict)
    ]:
        shutil.copy(path, photos / path.name)
    session = Session(open_library(tmp_path, photos))
    for dialogue in dialogues:
        lines = [json.dumps(_script_turn(t, photos)) for t in dialogue["turns"]]
        out = list(run_script(session, lines))
        assert [o.get("error") for o in out] == [None] * len(out), dialogue["id"]
        last = dialogue["turns"][-1]
        if isinstance(last, dict) and "image" in last:
            assert "like your photo" in out[-1]["searched"]
        if isinstance(last, dict) and "more_like" in last:
            assert len(out[-1]["query"]["liked"]) == 1 and out[-1]["results"]


def _script_turn(turn, photos: Path) -> dict:
    if isinstance(turn, str):
        return {"text": turn}
    field = "image" if "image" in turn else "more_like"
    return {"text": turn["text"], field: str(photos / f"{turn[field]}.jpg")}


def test_repl_survives_a_superscript_rank():
    from assistant.chat import TurnError, _shown
    from assistant.conversation import QueryState

    with pytest.raises(TurnError, match="give a result number from 1 to 2"):
        _shown(QueryState(shown=(1, 2)), "²")
