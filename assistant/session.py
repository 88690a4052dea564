"""One chat turn end to end: propose an update, apply it, search, say what was searched.

A `Session` holds only shared, read-only parts (the library and the turn parser); each conversation's
`QueryState` is held by the caller (a `gr.State`, the REPL loop), so many people can share one Session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from PIL import Image

from assistant import conversation, rules
from assistant.conversation import QueryState
from assistant.schema import QueryUpdate
from retrieval.query import Result

Propose = Callable[[QueryState, str], QueryUpdate]

HELP = (
    'Tell me what to look for, e.g. "show me cats", "but only outdoors", "not the black ones", '
    '"more like #2", "from 2019", or upload a photo to find similar ones.'
)


class UnknownImage(LookupError):
    """Feedback named an image id that this library has not indexed."""


def propose_with_rules(state: QueryState, text: str) -> QueryUpdate:
    """The default turn parser: deterministic rules, no model."""
    return rules.parse(text, state)


@dataclass
class Turn:
    """What one turn produced: the new state to keep, the results, the answer line, and the update applied."""

    state: QueryState
    results: list[Result]
    summary: str
    update: QueryUpdate


class Session:
    """Runs turns against one library. `propose(state, text)` turns a message into a `QueryUpdate`."""

    def __init__(self, library, propose: Propose = propose_with_rules, k: int = 12):
        self.library, self.propose, self.k = library, propose, k

    def turn(
        self,
        state: QueryState,
        text: str,
        image: Image.Image | None = None,
        more_like: int | None = None,
        up: Iterable[int] = (),
        down: Iterable[int] = (),
    ) -> Turn:
        """Apply one message (plus an optional upload, a picked result and thumbs) and search.

        `more_like` is the id of a result the user picked; it stands for any rank the text names.
        """
        update = self.propose(state, text) if text and text.strip() else QueryUpdate()
        if more_like is not None:  # the picked image is what "more like the second one" points at
            update = update.model_copy(update={"more_like": []})
        new = conversation.apply(state, update)
        if image is not None:
            new = conversation.add_example(new, image)
        picked = [more_like] if more_like is not None else []
        for image_id, liked in _thumbs([*picked, *up], down):
            new = conversation.feedback(new, self._known(image_id), liked)
        return self._search(new, text, update)

    def feedback(self, state: QueryState, image_id: int, up: bool) -> Turn:
        """Thumbs up or down on a result, then search again."""
        label = f"{'thumbs up' if up else 'thumbs down'} on photo {image_id}"
        return self._search(conversation.feedback(state, self._known(image_id), up), label, QueryUpdate())

    def reset(self) -> QueryState:
        return QueryState()

    def _known(self, image_id: int) -> int:
        """A picked or rated image must be in the index: an unknown id would break every later search."""
        if self.library.record(int(image_id)) is None:
            raise UnknownImage(f"no indexed image with id {int(image_id)}")
        return int(image_id)

    def _search(self, state: QueryState, text: str, update: QueryUpdate) -> Turn:
        query = conversation.to_query(state, self.k)
        if query.is_empty():
            summary = "; ".join((HELP, *_left_out(state), *state.notes))
            return Turn(conversation.with_results(state, [], text, summary), [], summary, update)
        results = self.library.search(query)
        summary = conversation.describe(state, len(results))
        state = conversation.with_results(state, [r.id for r in results], text, summary)
        return Turn(state, results, summary, update)


def _thumbs(up: Iterable[int], down: Iterable[int]) -> list[tuple[int, bool]]:
    return [(i, True) for i in up] + [(i, False) for i in down]


def _left_out(state: QueryState) -> list[str]:
    return ["I will leave out: " + ", ".join(state.negative)] if state.negative else []
