"""The state of one search conversation and the pure functions that update it.

No models here: a turn's proposed `QueryUpdate` (from the LLM or the rules) is applied by `apply`,
thumbs by `feedback`, and the result becomes a `retrieval.query.Query` through `to_query`. Every
function returns a new state and leaves its input alone, so `gr.State` and the history stay sane.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field, replace

from PIL import Image

from assistant.schema import Filters, QueryUpdate
from retrieval.query import Filter, Query

#: uploaded examples are kept small: they are only embedded, never shown at full size
EXAMPLE_SIDE = 512
MAX_CONCEPTS = 8
MAX_EXAMPLES = 3
MAX_HISTORY = 6
MAX_CONCEPT_CHARS = 200


@dataclass(frozen=True)
class QueryState:
    """What the conversation is searching for, as the user has shaped it so far.

    `positive[0]` is the subject ("cats"); later positives refine it ("outdoors"). `shown` holds the
    ids of the results shown last, best first, so "the second one" resolves. `notes` are remarks on
    the last update (a rank that was not shown) for the answer text.
    """

    positive: tuple[tuple[str, float], ...] = ()
    negative: tuple[str, ...] = ()
    images: tuple[Image.Image, ...] = field(default=(), compare=False)
    liked: tuple[int, ...] = ()
    disliked: tuple[int, ...] = ()
    filters: Filter = Filter()
    shown: tuple[int, ...] = ()
    history: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def subject(self) -> str | None:
        return self.positive[0][0] if self.positive else None

    def is_empty(self) -> bool:
        return not (self.positive or self.images or self.liked)


def key(concept: str) -> str:
    """A comparison key that ignores case, punctuation, articles and plural `s`: "The Cats" == "cat"."""
    words = [w for w in re.findall(r"\w+", concept.lower()) if w not in ("the", "a", "an")]
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words)


def is_as_typed(concept: str) -> bool:
    """True for text in a non-Latin script: the offline embedders read English, so it is searched as typed."""
    return any(ch.isalpha() and not unicodedata.name(ch, "").startswith("LATIN") for ch in concept)


def apply(state: QueryState, update: QueryUpdate) -> QueryState:
    """The state after one turn: reset, replace, remove, add, exclude, ranks, filters, in that order."""
    state = replace(state, notes=tuple(update.notes))
    if update.reset:
        state = QueryState(shown=state.shown, notes=state.notes)
    if update.replace and (update.add or update.more_like):
        state = replace(state, positive=(), negative=(), images=(), liked=())
    state = _remove(state, update.remove)
    state = _add(state, update.add)
    state = _exclude(state, update.exclude)
    state = _ranks(state, update.more_like, up=True)
    state = _ranks(state, update.less_like, up=False)
    return replace(state, filters=merge_filters(state.filters, update.filters))


def _clean(concepts: list[str]) -> list[str]:
    return [c.strip()[:MAX_CONCEPT_CHARS] for c in concepts if c and c.strip()]


def _without(items: tuple, keys: set[str], get=lambda item: item) -> tuple:
    return tuple(item for item in items if key(get(item)) not in keys)


def _remove(state: QueryState, concepts: list[str]) -> QueryState:
    keys = {key(c) for c in _clean(concepts)}
    if not keys:
        return state
    positive = _without(state.positive, keys, lambda p: p[0])
    return replace(state, positive=positive, negative=_without(state.negative, keys))


def _add(state: QueryState, concepts: list[str]) -> QueryState:
    positive = list(state.positive)
    for concept in _clean(concepts):
        if key(concept) not in {key(text) for text, _ in positive}:
            positive.append((concept, 1.0))
    keys = {key(c) for c in _clean(concepts)}
    positive = positive[:1] + positive[1:][-(MAX_CONCEPTS - 1) :]
    return replace(state, positive=tuple(positive), negative=_without(state.negative, keys))


def _exclude(state: QueryState, concepts: list[str]) -> QueryState:
    negative = list(state.negative)
    for concept in _clean(concepts):
        if key(concept) not in {key(n) for n in negative}:
            negative.append(concept)
    keys = {key(c) for c in _clean(concepts)}
    positive = _without(state.positive, keys, lambda p: p[0])
    return replace(state, positive=positive, negative=tuple(negative[-MAX_CONCEPTS:]))


def _ranks(state: QueryState, ranks: list[int], up: bool) -> QueryState:
    for rank in ranks:
        if 1 <= rank <= len(state.shown):
            state = feedback(state, state.shown[rank - 1], up)
        else:
            state = replace(state, notes=state.notes + (_rank_note(rank, len(state.shown)),))
    return state


def _rank_note(rank: int, shown: int) -> str:
    if not shown:
        return f"there is no #{rank} yet: no results were shown"
    return f"there is no #{rank}: {_count(shown, 'result')} {'was' if shown == 1 else 'were'} shown"


def feedback(state: QueryState, image_id: int, up: bool) -> QueryState:
    """Thumbs up pulls the search towards an image; thumbs down pushes away and hides it until a reset."""
    liked = tuple(i for i in state.liked if i != image_id)
    disliked = tuple(i for i in state.disliked if i != image_id)
    if up:
        return replace(state, liked=liked + (image_id,), disliked=disliked)
    return replace(state, liked=liked, disliked=disliked + (image_id,))


def add_example(state: QueryState, image: Image.Image) -> QueryState:
    """Query by example: keep a small RGB copy of the uploaded image (the most recent few)."""
    small = image.convert("RGB")
    small.thumbnail((EXAMPLE_SIDE, EXAMPLE_SIDE))
    return replace(state, images=(state.images + (small,))[-MAX_EXAMPLES:])


def merge_filters(current: Filter, update: Filters) -> Filter:
    """Fields the update sets replace the current ones; the others stay. A backwards date range
    ("from 2019 to 2017") is read the way round that can match."""
    changes = {name: value for name, value in update.model_dump().items() if value}
    merged = replace(current, **changes) if changes else current
    if merged.date_from and merged.date_to and merged.date_from > merged.date_to:
        merged = replace(merged, date_from=merged.date_to, date_to=merged.date_from)
    return merged


def with_results(state: QueryState, ids: list[int], user_text: str, summary: str) -> QueryState:
    """Record what was shown (so ranks resolve next turn) and one history line."""
    history = (state.history + ((user_text, summary),))[-MAX_HISTORY:]
    return replace(state, shown=tuple(int(i) for i in ids), history=history)


def to_query(state: QueryState, k: int = 12) -> Query:
    """The search this state asks for; disliked images are pushed away and never returned."""
    return Query(
        positive=list(state.positive),
        negative=[(text, 1.0) for text in state.negative],
        images=list(state.images),
        like_ids=list(state.liked),
        dislike_ids=list(state.disliked),
        exclude_ids=list(state.disliked),
        filter=state.filters,
        k=k,
    )


def to_dict(state: QueryState) -> dict:
    """The structured query as JSON-able data (uploaded images are counted, not serialised)."""
    return {
        "positive": [[text, weight] for text, weight in state.positive],
        "negative": list(state.negative),
        "images": len(state.images),
        "liked": list(state.liked),
        "disliked": list(state.disliked),
        "filters": {name: value for name, value in asdict(state.filters).items() if value},
        "shown": list(state.shown),
    }


def describe(state: QueryState, n_results: int) -> str:
    """What was searched, in words a person reads at a glance.

    e.g. "cats, outdoors, like #2, from 2019; leaving out: black cats; 12 results".
    """
    wanted = ", ".join(_wanted(state))
    typed = [text for text, _ in state.positive if is_as_typed(text)]
    parts = [wanted or "nothing yet"] if wanted or not typed else []
    if typed:
        parts.append(f"searched as typed: {', '.join(typed)} (offline search understands English best)")
    if state.negative:
        parts.append("leaving out: " + ", ".join(state.negative))
    if state.disliked:
        parts.append(f"hiding {_count(len(state.disliked), 'photo')} you turned down")
    parts.append(_count(n_results, "result") if n_results else "no results")
    return "; ".join(parts + list(state.notes))


def _wanted(state: QueryState) -> list[str]:
    wanted = [text for text, _ in state.positive if not is_as_typed(text)]
    if state.images:
        n = len(state.images)
        wanted.append("like your photo" if n == 1 else f"like your {n} photos")
    ranks = [f"#{state.shown.index(i) + 1}" for i in state.liked if i in state.shown]
    if ranks:
        wanted.append("like " + ", ".join(ranks))
    others = len(state.liked) - len(ranks)
    if others:
        wanted.append(f"like {_count(others, 'photo')} you liked")
    return wanted + _filter_words(state.filters)


def _filter_words(f: Filter) -> list[str]:
    words = []
    if f.date_from and f.date_from == f.date_to:
        words.append(f"from {f.date_from}")
    elif f.date_from and f.date_to:
        words.append(f"from {f.date_from} to {f.date_to}")
    elif f.date_from:
        words.append(f"since {f.date_from}")
    elif f.date_to:
        words.append(f"until {f.date_to}")
    if f.folder:
        words.append(f"in folder {f.folder}")
    if f.camera:
        words.append(f"camera {f.camera}")
    return words


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
