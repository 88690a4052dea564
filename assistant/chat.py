"""Chat in the terminal (`repl`) or from a file of turns (`run_script`, for `imgchat chat --script`).

A script holds one JSON object per line: `{"text": ..., "image": PATH?, "more_like": PATH?,
"up": [PATH...]?, "down": [PATH...]?}`. Each turn yields one JSON-able dict; a bad turn (unknown path,
unreadable image, broken JSON) yields its error and leaves the conversation as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from assistant.conversation import QueryState, to_dict
from assistant.session import HELP, Session, Turn, UnknownImage
from retrieval.images import ImageError, load_image


class TurnError(ValueError):
    """A scripted or typed turn that cannot run; the message is one line meant for a person."""


def run_script(
    session: Session, lines: Iterable[str], base: Path | None = None, state: QueryState | None = None
) -> Iterator[dict]:
    """Run scripted turns in one conversation; relative paths are read from `base` (default: cwd)."""
    state = state or QueryState()
    base = Path(base or Path.cwd())
    number = 0
    for line in lines:
        if not line.strip():
            continue
        number += 1
        spec: dict = {}
        try:
            spec = _spec(line)
            text = str(spec.get("text") or "")
            turn = session.turn(state, text, **_turn_args(session, spec, base))
        except (TurnError, UnknownImage) as error:
            yield _output(number, str(spec.get("text") or ""), state, "", [], error=str(error))
            continue
        state = turn.state
        yield _output(number, text, state, turn.summary, turn.results)


def _spec(line: str) -> dict:
    try:
        spec = json.loads(line)
    except json.JSONDecodeError as error:
        raise TurnError(f"not a JSON object: {error.msg} at column {error.colno}") from None
    if not isinstance(spec, dict):
        raise TurnError('each line must be a JSON object like {"text": "show me cats"}')
    return spec


def _turn_args(session: Session, spec: dict, base: Path) -> dict:
    """The image, picked result and thumbs of a scripted turn, with paths turned into catalog ids."""
    args: dict = {}
    if image := _paths(spec, "image"):
        args["image"] = _load(base / image[0])
    if picked := _paths(spec, "more_like"):
        args["more_like"] = _id(session, base / picked[0], "more_like")
    for field in ("up", "down"):
        args[field] = [_id(session, base / p, field) for p in _paths(spec, field)]
    return args


def _paths(spec: dict, field: str) -> list[str]:
    """A field's path or paths; `image` and `more_like` take one, `up` and `down` one or a list."""
    value = spec.get(field) or []
    paths = [value] if isinstance(value, str) else value
    many = field in ("up", "down")
    if (
        not isinstance(paths, list)
        or not all(isinstance(p, str) for p in paths)
        or (len(paths) > 1 and not many)
    ):
        raise TurnError(
            f"{field}: expected {'a path or a list of paths' if many else 'one path'}, got {value!r}"
        )
    return paths


def _load(path: Path):
    try:
        return load_image(path)
    except (ImageError, OSError) as error:
        raise TurnError(f"image: cannot read {path}: {error}") from None


def _id(session: Session, path: Path, field: str) -> int:
    image_id = session.library.id_for_path(path)
    if image_id is None:
        raise TurnError(f"{field}: {path} is not in the index (index its folder first)")
    return image_id


def _output(number: int, text: str, state: QueryState, searched: str, results: list, error: str = "") -> dict:
    out = {
        "turn": number,
        "text": text,
        "query": to_dict(state),
        "searched": searched,
        "results": [
            {"path": r.path, "score": round(float(r.score), 4), "explanation": r.explanation} for r in results
        ],
    }
    return {**out, "error": error} if error else out


REPL_HELP = (
    HELP + "\nCommands: /more N (more like result N), /up N, /down N (thumbs), /image PATH [text], "
    "/reset, /quit."
)


def repl(
    session: Session,
    read: Callable[[str], str] = input,
    write: Callable[[str], None] = print,
    state: QueryState | None = None,
) -> QueryState:
    """Chat in the terminal until /quit or end of input; returns the final state."""
    state = state or QueryState()
    write(REPL_HELP)
    while True:
        try:
            line = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            return state
        if line in ("/quit", "/exit", "quit", "exit"):
            return state
        if not line:
            continue
        try:
            state = _repl_line(session, state, line, write)
        except (TurnError, UnknownImage) as error:
            write(f"! {error}")


def _repl_line(session: Session, state: QueryState, line: str, write: Callable[[str], None]) -> QueryState:
    command, _, rest = line.partition(" ")
    if command == "/help":
        write(REPL_HELP)
        return state
    if command == "/reset":
        write("Starting over.")
        return session.reset()
    turn = _command_turn(session, state, command, rest.strip()) if command.startswith("/") else None
    turn = turn or session.turn(state, line)
    for row in format_turn(turn):
        write(row)
    return turn.state


def _command_turn(session: Session, state: QueryState, command: str, rest: str) -> Turn:
    if command == "/image":
        path, _, text = rest.partition(" ")
        return session.turn(state, text, image=_load(Path(path).expanduser()))
    if command in ("/more", "/up", "/down"):
        image_id = _shown(state, rest)
        if command == "/more":
            return session.turn(state, "", more_like=image_id)
        return session.feedback(state, image_id, up=command == "/up")
    raise TurnError(f"unknown command {command}; type /help")


def _shown(state: QueryState, rank: str) -> int:
    if not rank.isdecimal() or not rank.isascii() or not 1 <= int(rank) <= len(state.shown):
        raise TurnError(
            f"give a result number from 1 to {len(state.shown)}" if state.shown else "no results yet"
        )
    return state.shown[int(rank) - 1]


def format_turn(turn: Turn) -> list[str]:
    """The answer line, then one line per result: rank, score, path, why it matched."""
    rows = [turn.summary if turn.state.is_empty() else f"searched: {turn.summary}"]
    for rank, result in enumerate(turn.results, 1):
        why = f"  ({result.explanation})" if result.explanation else ""
        rows.append(f"{rank:>3}. {result.score:6.3f}  {result.path}{why}")
    return rows
