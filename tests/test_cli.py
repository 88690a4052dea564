"""The command line over a real index: index, search (text, negatives, image, JSON), one-line errors."""

import json
from pathlib import Path

from click.testing import CliRunner

from assistant.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_index_then_search_as_json(photo_folder):
    out = run("index", photo_folder, "--embedder", "fake")
    assert out.exit_code == 0 and "8 embedded" in out.output
    again = run("index", photo_folder)  # the embedder is remembered by the index
    assert "8 unchanged" in again.output
    found = run("search", "red, green, not green", "--json", "-k", "2")
    rows = [json.loads(line) for line in found.output.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2]
    assert all(Path(r["path"]).name.startswith("red") for r in rows)
    assert all(set(r) == {"rank", "path", "score", "explanation"} for r in rows)


def test_search_by_image_and_not_flag(photo_folder):
    run("index", photo_folder, "--embedder", "fake")
    example = photo_folder / "home" / "blue-2.png"
    out = run("search", "--image", example, "-k", "2")
    assert out.output.count("blue-") == 2 and "resembles your photo" in out.output
    out = run("search", "blue, yellow", "--not", "blue", "-k", "2", "--json")
    assert all("yellow" in json.loads(line)["path"] for line in out.output.splitlines())


def test_bad_files_are_reported_one_line_each(photo_folder):
    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = CliRunner().invoke(cli, ["index", str(photo_folder), "--embedder", "fake"])
    lines = [line for line in out.output.splitlines() if "skipped /" in line]
    assert len(lines) == 1 and "broken.jpg" in lines[0] and out.exit_code == 0


def test_errors_are_one_line_messages(photo_folder, tmp_path):
    out = run("search", "cats")
    assert out.exit_code != 0 and "run `imgchat index FOLDER` first" in out.output
    run("index", photo_folder, "--embedder", "fake", "--index", "mine")
    out = CliRunner().invoke(cli, ["index", str(photo_folder), "--embedder", "nonsense", "--index", "mine"])
    assert out.exit_code == 1 and out.output.strip().startswith("imgchat: unknown embedder 'nonsense'")
    assert len(out.output.strip().splitlines()) == 1


def test_chat_script_prints_one_json_object_per_turn(photo_folder, tmp_path):
    run("index", photo_folder, "--embedder", "fake")
    script = tmp_path / "turns.jsonl"
    red = photo_folder / "holidays" / "red-1.jpg"
    script.write_text(
        '{"text": "show me red and blue"}\n'
        '{"text": "not the blue ones"}\n'
        f'{{"text": "more like this", "more_like": "{red}"}}\n'
        '{"text": "x", "up": ["nowhere.jpg"]}\n'
    )
    out = run("chat", "--script", script, "--json", "-k", "2", "--llm", "rules")
    turns = [json.loads(line) for line in out.output.splitlines()]
    assert [t["turn"] for t in turns] == [1, 2, 3, 4]
    assert turns[1]["query"]["negative"] and "leaving out" in turns[1]["searched"]
    assert all("red" in Path(r["path"]).name for r in turns[1]["results"])
    assert red.stat() and turns[2]["query"]["liked"]
    assert "not in the index" in turns[3]["error"]


def test_share_without_login_is_refused(photo_folder):
    out = CliRunner().invoke(cli, ["serve", str(photo_folder), "--share"])
    assert out.exit_code == 1 and "--auth" in out.output and len(out.output.strip().splitlines()) == 1
