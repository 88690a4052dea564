"""A deterministic parser from one chat message to a `QueryUpdate`: the no-LLM backend and the fallback.

It handles the common English shapes of a search conversation ("show me X", "but only X", "not the
white ones", "X instead", "more like #2", "start over: Y", "from 2019", "only from the holidays
folder") and a few Chinese markers. Concepts are kept as typed once the filler is stripped; anything
it does not understand becomes a concept, so the worst outcome of any message is a poor search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from assistant.conversation import QueryState, key
from assistant.schema import Filters, QueryUpdate

#: a chat message longer than this is read only up to here (the parser's regexes stay fast)
MAX_MESSAGE_CHARS = 1000
_YEAR = r"(?:19|20)\d\d"
_MONTHS = "january february march april may june july august september october november december".split()
_MONTH = r"(?:" + "|".join(_MONTHS) + r")"
_ORDINALS = "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth".split()

RESET = re.compile(
    r"\b(?:start(?:ing)?\s+(?:over|again|afresh|from scratch|a new search)|begin again|from scratch"
    r"|forget\s+(?:all\s+(?:of\s+)?)?(?:that|this|it|everything)|scratch that|new search|reset"
    r"|clear\s+(?:all|everything|it|the search)|never\s*mind(?=\s*(?:[,.;:!-]|$)))\b"
    r"|重新开始|从头开始|重来|算了",
    re.I,
)
CLAUSE_SPLIT = re.compile(
    r"[,;.!?:，。！？；：]+|\s+-+\s+|\s+but\s+|\s+(?:and|or)\s+(?=(?:not|no|without|nothing|never)\b)", re.I
)
REPLACE_MARK = re.compile(
    r"\b(?:actually|instead|rather|switch(?:ing)? to|change (?:it )?to|go with|how about|what about)\b"
    r"|换成|改成|换为|改为|不如",
    re.I,
)
REFINE_MARK = re.compile(
    r"^(?:and|but|also|only|just|plus|add|include|especially|other)\b"
    r"|\b(?:ones?|them|those|these|too|as well|also|only|just)\b",
    re.I,
)
REQUEST = re.compile(
    r"\b(?:show|find|search|look(?:ing)? for|give me|get me|(?:i|i'd|i would)\s+(?:like|want|need)"
    r"|do you have|are there|is there|anything)\b",
    re.I,
)
NEGATION = re.compile(
    r"^(?:not|no|never|without|except(?:\s+for)?|excluding|exclude|nothing|none(?:\s+of)?|minus|skip|hide"
    r"|leave out|no more|(?:i\s+)?(?:do not|don'?t)\s+(?:show|want|include|need|like)"
    r"(?:\s+(?:me|to see))?(?:\s+any)?)\b",
    re.I,
)
REMOVE = re.compile(
    r"^(?:forget(?:\s+about)?|drop|remove|get rid of|lose|no need for|(?:i )?(?:do not|don'?t) care about)\b",
    re.I,
)
LEAD = re.compile(
    r"^(?:(?:ok(?:ay)?|hmm+|um+|uh+|well|so|and|or|also|plus|but|then|now|please|yes|yeah|hey|hi|hello|thanks"
    r"|thank you|cool|great|nice|wow|alright|right"
    r"|(?:can|could|would|will) you(?:\s+please)?(?:\s+also)?|let'?s(?:\s+(?:see|look at|have|get|try))?"
    r"|let me see|show(?:\s+(?:me|us))?|give me|find(?:\s+me)?|search(?:\s+for)?|look(?:ing)?\s+for"
    r"|get me|bring(?:\s+me)?|display|(?:i|i'd|i would)\s+(?:like|want|need|love)(?:\s+to)?"
    r"(?:\s+(?:see|find|look at|have|get))?|i'?m\s+(?:looking|searching)\s+for|do you have|have you got"
    r"|are there|is there|got|any(?:thing|one)?|some(?:thing)?|all|the|a|an|those|these|more|other|only"
    r"|just|add|include|with|especially|mostly|actually|rather|instead|switch(?:ing)? to|change (?:it )?to|go with"
    r"|how about|what about|(?:photos?|pictures?|pics?|images?|shots?|snaps?)\s+(?:of|with|showing))\b[\s,]*)+",
    re.I,
)
TRAIL = re.compile(
    r"(?:[\s,]*\b(?:please|thanks|thank you|too|as well|either|instead|specifically|only|then|again|now|here"
    r"|any ?more|for me|if you can|if possible|photos?|pictures?|pics?|images?|shots?))+$",
    re.I,
)
DEICTIC = re.compile(r"\s*\b(?:like|of|as)\s+(?:this|that|it|these|those)(?:\s+ones?)?\b", re.I)
KIND_OF = re.compile(r"^(?:this|that|these|those)\s+(?:kinds?|sorts?|types?)\s+of\s+", re.I)
EMPTY = re.compile(
    r"(?:this|that|it|these|those|them|ones?|this one|that one|things?|stuff|something)?", re.I
)
ONES = re.compile(
    r"\bones?\b(?=\s*$|\s+(?:in|with|from|on|at|that|which|where|without|of|near|by|under|over)\b)", re.I
)
PREPOSITION = re.compile(r"^(?:in|from|at|of|with|by|near|on)\s+", re.I)
LIST_SPLIT = re.compile(r"\s*(?:,|\band\b|\bor\b|\bnor\b)\s*(?:(?:not|no|without)\s+)?", re.I)

# "#3", "number 3", "like 3", "the third one", "the last photo", "more like the second" (not "the last supper")
RANK = re.compile(
    r"#\s*(\d{1,3})|\bnumber\s+(\d{1,3})\b|\blike\s+(\d{1,2})(?=\s*$|\s*(?:,|and\b|or\b))"
    r"|\b(" + "|".join(_ORDINALS) + r"|last|\d{1,2}(?:st|nd|rd|th))\b"
    r"(?=\s+(?:one|photo|picture|image|result|pic)s?\b|\s*$)",
    re.I,
)
CONJUNCTIONS = re.compile(r"^(?:(?:and|but|or|also|so|ok(?:ay)?|hmm+|well|please|then)\b[\s,]*)+", re.I)
RANK_DOWN = re.compile(
    r"\b(?:not|less|unlike|nothing|don'?t|dislike|fewer|no more|hate|wrong|bad|away from|avoid)\b", re.I
)

FOLDER = re.compile(
    r"\b(?:only\s+)?(?:from|in)\s+(?:the\s+|my\s+)?[\"']?([\w\-.]+(?:\s+[\w\-.]+){0,2}?)[\"']?\s+(?:folder|album|directory)\b"
    r"|\b(?:folder|album|directory)\s+[\"']?([\w\-.]+)[\"']?",
    re.I,
)
CAMERA = re.compile(
    r"\b(?:taken|shot)\s+(?:with|on)\s+(?:an?\s+|my\s+|the\s+)?([A-Za-z][\w\-]*(?:\s+[A-Z0-9][\w\-]*)?)"
)
YEAR_RANGE = re.compile(
    rf"\b(?:(?:taken\s+)?(?:between|from)\s+)?({_YEAR})\s*(?:and|to|until|till|through|-|–)\s*({_YEAR})\b",
    re.I,
)
YEAR_BOUND = re.compile(rf"\b(before|until|till|up to|after|since)\s+({_YEAR})\b", re.I)
YEAR_ONE = re.compile(rf"\b(?:(?:taken\s+)?(?:from|in|during|of)\s+)?(?:({_MONTH})\s+)?({_YEAR})\b", re.I)

ZH_EXCLUDE = re.compile(r"^(?:不要|别|除了|去掉|不看|没有)")
ZH_LEAD = re.compile(
    r"^(?:我想看看|我想看|我要看|请给我看看|请给我看|给我看看|给我看|我想要|我要|找一些|找找|找|有没有|有|看看"
    r"|一些|请|只要|只看|只有|仅|只|还要|也要|换成|改成|换为|改为|不如|吧)"
)
ZH_TRAIL = re.compile(
    r"(?:的也一起给我看|也一起给我看|一起给我看|给我看|的照片吗|的图片吗|的照片|的图片|照片|图片|吗|吧|呢|也要|的)$"
)
_PUNCTUATION = " \t,'\"()[]{}<>*`"
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]")


@dataclass
class _Draft:
    """The update being assembled from the clauses of one message."""

    add: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    more_like: list[int] = field(default_factory=list)
    less_like: list[int] = field(default_factory=list)
    requested: bool = False
    refined: bool = False


def parse(text: str, state: QueryState | None = None) -> QueryUpdate:
    """Propose the update that `text` asks of the conversation in `state` (see the module docstring)."""
    state = state or QueryState()
    text = re.sub(r"\s+", " ", text[:MAX_MESSAGE_CHARS].replace("’", "'")).strip()
    reset, text = _split_reset(text)
    filters, text = take_filters(text)
    fresh = QueryState(shown=state.shown)
    draft = _draft(text, fresh if reset else state)
    replacing = not reset and _replaces(text, draft, state)
    if replacing:
        draft = _draft(text, fresh)
    return QueryUpdate(
        reset=reset,
        replace=replacing,
        add=_unique(draft.add),
        remove=_unique(draft.remove),
        exclude=_unique(draft.exclude),
        more_like=draft.more_like,
        less_like=draft.less_like,
        filters=filters,
    )


def _draft(text: str, state: QueryState) -> _Draft:
    draft = _Draft()
    for clause in CLAUSE_SPLIT.split(text):
        if clause and clause.strip():
            _clause(clause.strip(), state, draft)
    return draft


def _replaces(text: str, draft: _Draft, state: QueryState) -> bool:
    """Replace on "X instead", "actually X", or a fresh request ("show me X") while a subject is set."""
    if not (draft.add or draft.more_like):
        return False
    return bool(REPLACE_MARK.search(text)) or (draft.requested and not draft.refined and bool(state.positive))


def _split_reset(text: str) -> tuple[bool, str]:
    """Whether the message starts over, and what it asks after its last reset phrase."""
    matches = list(RESET.finditer(text))
    if not matches:
        return False, text
    return True, text[matches[-1].end() :]


def _unique(concepts: list[str]) -> list[str]:
    seen, out = set(), []
    for concept in concepts:
        if key(concept) not in seen:
            seen.add(key(concept))
            out.append(concept)
    return out


def _subject(state: QueryState, draft: _Draft) -> str | None:
    """What "the white ones" refers to: the subject so far, or the first thing this message asked for."""
    return state.subject or (draft.add[0] if draft.add else None)


def _clause(clause: str, state: QueryState, draft: _Draft) -> None:
    if CJK.search(clause):
        _chinese_clause(clause, draft)
        return
    bare = CONJUNCTIONS.sub("", clause)
    if _rank_clause(bare, state, draft):
        return
    if negation := NEGATION.match(bare):
        for part in LIST_SPLIT.split(bare[negation.end() :]):
            _append(draft.exclude, concept(part, _subject(state, draft), negated=True))
    elif removal := REMOVE.match(bare):
        _removal(bare[removal.end() :], state, draft)
    else:
        draft.requested |= bool(REQUEST.search(clause))
        draft.refined |= bool(REFINE_MARK.search(clause))
        _append(draft.add, concept(clause, _subject(state, draft)))


def _append(concepts: list[str], concept: str) -> None:
    if concept:
        concepts.append(concept)


def _rank_clause(clause: str, state: QueryState, draft: _Draft) -> bool:
    """Ranks of the results shown last: "more like the second one", "not like #3", "#2 is great"."""
    ranks = [_rank(m, len(state.shown)) for m in RANK.finditer(clause)]
    if not ranks:
        return False
    (draft.less_like if RANK_DOWN.search(clause) else draft.more_like).extend(ranks)
    return True


def _rank(match: re.Match, shown: int) -> int:
    number = next((g for g in match.groups()[:3] if g), None)
    if number:
        return int(number)
    word = match.group(4).lower()
    if word == "last":
        return max(shown, 1)
    if word in _ORDINALS:
        return _ORDINALS.index(word) + 1
    return int(re.match(r"\d+", word).group())


def _removal(phrase: str, state: QueryState, draft: _Draft) -> None:
    """Forget an earlier concept ("drop the outdoors part"); when none matches, leave the thing out instead."""
    known = {key(text) for text, _ in state.positive} | {key(text) for text in state.negative}
    for part in LIST_SPLIT.split(phrase):
        c = concept(re.sub(r"\s+(?:part|bit|thing)$", "", part.strip(), flags=re.I), state.subject)
        _append(draft.remove if key(c) in known else draft.exclude, c)


def concept(text: str, subject: str | None, negated: bool = False) -> str:
    """The noun phrase in a clause: filler stripped, "the white ones" resolved against the subject.

    Returns "" for pure pointers ("this one", "things like this") that name nothing.
    """
    text = _strip(KIND_OF.sub("", _strip(text)))
    text = _strip(DEICTIC.sub("", text))
    if EMPTY.fullmatch(text):
        return ""
    if ONES.search(text):
        return _strip(_resolve_ones(text, subject))
    return _strip(PREPOSITION.sub("", text)) if negated else text


def _strip(text: str) -> str:
    """Remove leading and trailing filler words until none is left."""
    previous = None
    text = re.sub(r"\s+instead of\b.*$", "", text.strip(_PUNCTUATION), flags=re.I)
    while text != previous:
        previous = text
        text = TRAIL.sub("", LEAD.sub("", text)).strip(_PUNCTUATION)
    return text


def _resolve_ones(text: str, subject: str | None) -> str:
    match = ONES.search(text)
    before, after = text[: match.start()].strip(), text[match.end() :].strip()
    return " ".join(part for part in (before, subject or "", after) if part)


def take_filters(text: str) -> tuple[Filters, str]:
    """Dates ("from 2019", "between 2017 and 2019", "in July 2018"), folder, camera; the text without them."""
    fields: dict[str, str] = {}
    text = _take(FOLDER, text, lambda m: fields.update(folder=(m.group(1) or m.group(2)).strip()))
    text = _take(CAMERA, text, lambda m: fields.update(camera=m.group(1)))
    text = _take(YEAR_RANGE, text, lambda m: fields.update(date_from=m.group(1), date_to=m.group(2)))
    text = _take(YEAR_BOUND, text, lambda m: fields.update(_bound(m.group(1).lower(), int(m.group(2)))))
    text = _take(YEAR_ONE, text, lambda m: fields.update(dict.fromkeys(("date_from", "date_to"), _month(m))))
    return Filters(**fields), text


def _take(pattern: re.Pattern, text: str, found) -> str:
    def cut(match: re.Match) -> str:
        found(match)
        return " "

    return pattern.sub(cut, text)


def _bound(word: str, year: int) -> dict[str, str]:
    if word == "before":
        return {"date_to": str(year - 1)}
    if word == "after":
        return {"date_from": str(year + 1)}
    return {"date_from": str(year)} if word == "since" else {"date_to": str(year)}


def _month(match: re.Match) -> str:
    month, year = match.group(1), match.group(2)
    return f"{year}-{_MONTHS.index(month.lower()) + 1:02d}" if month else year


def _chinese_clause(clause: str, draft: _Draft) -> None:
    """A few Chinese markers (不要 not, 只要 only, 换成 instead); the concept itself is searched as typed."""
    negated = ZH_EXCLUDE.match(clause)
    text = clause[negated.end() :] if negated else clause
    previous = None
    while text != previous:
        previous = text
        text = ZH_TRAIL.sub("", ZH_LEAD.sub("", text.strip())).strip()
    _append(draft.exclude if negated else draft.add, text)
