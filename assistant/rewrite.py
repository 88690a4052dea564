"""One chat turn to a validated `QueryUpdate`: state + message → prompt → LLM → JSON → pydantic, or the rules.

The chain is a LangChain Runnable with the deterministic rules parser as its fallback. Three modes
(MODES): `translate` (default) lets the rules parse and asks the LLM only to put concepts written in
another script into English; `merge` and `llm` have the LLM rewrite the whole turn as JSON. Malformed
or empty output, a timeout, a missing model or no LLM at all end in `rules.parse`, and the result says
which path was taken (`Rewrite.source`, `Rewrite.reason`).

The user's message only ever reaches a prompt as one quoted line, and the LLM's output only ever
becomes concepts of a `QueryUpdate`: a prompt injection can at worst produce a bad search.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from pydantic import ValidationError

from assistant.conversation import QueryState, is_as_typed
from assistant.llms import LLM, LLMError
from assistant.schema import QueryUpdate

MAX_CONCEPTS = 6
MAX_CONCEPT_CHARS = 60
MAX_RANK = 100
CONCEPT_FIELDS = ("add", "exclude", "remove")
DATE = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")


class MissingVariables(KeyError):
    """A prompt was rendered without some of its variables; the message names them."""

    def __str__(self) -> str:
        return self.args[0]


class RewriteFailed(RuntimeError):
    """The LLM path gave nothing usable; the rules parser takes over."""


# ---- prompt files -------------------------------------------------------------------------------


def prompt_text(name: str) -> str:
    """A file from the `prompts` package (installed as package data), else from the repository."""
    try:
        return resources.files("prompts").joinpath(name).read_text(encoding="utf-8")
    except (ImportError, OSError):
        return (Path(__file__).resolve().parents[1] / "prompts" / name).read_text(encoding="utf-8")


def render(template: PromptTemplate | FewShotPromptTemplate, **variables) -> str:
    """Format a LangChain prompt template, naming every missing variable at once."""
    missing = sorted(set(template.input_variables) - set(variables))
    if missing:
        raise MissingVariables(f"Missing variables: {', '.join(missing)}")
    return template.format(**variables)


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in prompt_text(name).splitlines() if line.strip()]


def few_shot(stem: str, examples: list[dict], variables: list[str]) -> FewShotPromptTemplate:
    """`<stem>_system.txt`, the examples through `<stem>_example.txt`, then `<stem>_turn.txt`.

    Example values get their braces doubled: FewShotPromptTemplate formats the joined text once more.
    """
    return FewShotPromptTemplate(
        prefix=_braces(prompt_text(f"{stem}_system.txt").strip()),
        examples=[{k: _braces(v) for k, v in row.items()} for row in examples],
        example_prompt=PromptTemplate.from_template(prompt_text(f"{stem}_example.txt").strip()),
        suffix=prompt_text(f"{stem}_turn.txt").strip(),
        input_variables=variables,
        example_separator="\n\n",
    )


def _braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def examples() -> list[dict]:
    """The rewrite few-shot rows, rendered the way a live turn is."""
    return [
        {
            "search": describe_search(r["search"], r.get("not", [])),
            "message": quote(r["message"]),
            "update": json.dumps(r["update"], ensure_ascii=False),
        }
        for r in rows("rewrite_examples.jsonl")
    ]


@cache
def rewrite_template() -> FewShotPromptTemplate:
    """The few-shot completion prompt: system text, examples, then the turn with `Update: {"` opened.

    A completion prompt, not a chat one: SmolLM2-135M ignored later turns of a chat prompt but
    followed few-shot lines.
    """
    return few_shot("rewrite", examples(), ["search", "message"])


@cache
def translate_template() -> FewShotPromptTemplate:
    """Phrase → English, one line: a task small enough for a 270M base model."""
    return few_shot("translate", rows("translate_examples.jsonl"), ["phrase"])


def quote(message: str) -> str:
    """The message as a JSON string: newlines and quotes escaped, so it cannot fake a new prompt line."""
    return json.dumps(message.strip(), ensure_ascii=False)


def describe_search(positive: list[str], negative: list[str] = ()) -> str:
    text = json.dumps(list(positive), ensure_ascii=False)
    return f"{text} not {json.dumps(list(negative), ensure_ascii=False)}" if negative else text


def translate_prompt(phrase: str) -> str:
    return render(translate_template(), phrase=" ".join(phrase.split()))


def rewrite_prompt(state: QueryState, message: str) -> str:
    search = describe_search([text for text, _ in state.positive], list(state.negative))
    return render(rewrite_template(), search=search, message=quote(message))


# ---- output parsing -----------------------------------------------------------------------------


def first_json_object(text: str) -> dict:
    """The first balanced `{...}` in `text`, parsed; the prompt opens the brace, so it is prepended."""
    start = text.find("{")
    if start < 0:
        raise RewriteFailed("no JSON object in the LLM output")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as error:
        raise RewriteFailed(f"malformed JSON from the LLM: {error.msg}") from error
    if not isinstance(value, dict):
        raise RewriteFailed("the LLM output is not a JSON object")
    return value


def parse_update(text: str) -> QueryUpdate:
    """Validate the LLM's JSON as a QueryUpdate and clamp what a small model gets wrong."""
    try:
        update = QueryUpdate.model_validate(first_json_object(text))
    except ValidationError as error:
        raise RewriteFailed(f"the LLM output does not fit the schema: {error.errors()[0]['msg']}") from error
    return sanitize(update)


def sanitize(update: QueryUpdate) -> QueryUpdate:
    """Short, few concepts; ranks in range; dates that look like dates. Anything else is dropped."""

    def concepts(items: list[str]) -> list[str]:
        return [c.strip() for c in items if c.strip() and len(c) <= MAX_CONCEPT_CHARS][:MAX_CONCEPTS]

    def ranks(items: list[int]) -> list[int]:
        return [r for r in items if 1 <= r <= MAX_RANK][:MAX_CONCEPTS]

    filters = update.filters.model_copy(
        update={
            f: None
            for f in ("date_from", "date_to")
            if not DATE.fullmatch(getattr(update.filters, f) or "0000")
        }
    )
    return update.model_copy(
        update={
            "add": concepts(update.add),
            "remove": concepts(update.remove),
            "exclude": concepts(update.exclude),
            "more_like": ranks(update.more_like),
            "less_like": ranks(update.less_like),
            "filters": filters,
            "notes": [],  # notes are ours to write, never the model's
        }
    )


def english_phrase(text: str) -> str:
    """A translation as a concept: one short line in Latin script, or a failure."""
    phrase = text.strip().strip("\"'.").strip()
    if not phrase or is_as_typed(phrase) or len(phrase) > MAX_CONCEPT_CHARS:
        raise RewriteFailed(f"no usable English translation in {text!r}")
    return phrase


def is_empty(update: QueryUpdate) -> bool:
    return update == QueryUpdate()


def merge(llm: QueryUpdate, rules: QueryUpdate) -> QueryUpdate:
    """The rules' update with the LLM's concepts where the rules kept text as typed (or found nothing).

    On the dialogue set (bench/dialogues.py) the rules read English structure ("the second one",
    "start over", "instead") far better than a 135M-270M model does.
    """

    def pick(field: str) -> list[str]:
        ours, theirs = getattr(rules, field), getattr(llm, field)
        return theirs if theirs and any(is_as_typed(c) for c in ours) else ours

    if is_empty(rules):
        return llm
    return rules.model_copy(update={f: pick(f) for f in ("add", "exclude", "remove")})


# ---- the chain ----------------------------------------------------------------------------------


MODES = {
    "translate": "the rules parse; the LLM only puts concepts in other scripts into English",
    "merge": "the LLM rewrites the turn; its concepts replace the rules' where those are not English",
    "llm": "the LLM's update is used as it is",
}


@dataclass
class RewriteConfig:
    """How turns are rewritten with an LLM (see MODES)."""

    llm: str = "rules"
    mode: str = "translate"
    timeout_s: float = 30.0
    max_new_tokens: int = 64

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown rewrite mode {self.mode!r}; use one of: {', '.join(MODES)}")


@dataclass
class Rewrite:
    """A turn's update and how it was made: `source` is `rules`, `translate`, `merge`, `llm` or `fallback`."""

    update: QueryUpdate
    source: str
    reason: str = ""
    raw: str = ""


def complete_within(llm: LLM, prompt: str, config: RewriteConfig, max_new_tokens: int | None = None) -> str:
    """Run the LLM in a daemon thread and give up after `timeout_s` (the thread finishes unobserved)."""
    box: dict = {}
    max_new_tokens = max_new_tokens or config.max_new_tokens

    def run():
        try:
            box["text"] = llm.complete(prompt, max_new_tokens, stop=["\n"], timeout=config.timeout_s)
        except Exception as error:  # reported in the caller's thread below
            box["error"] = error

    worker = threading.Thread(target=run, daemon=True, name=f"rewrite-{llm.name}")
    worker.start()
    worker.join(config.timeout_s)
    if worker.is_alive():
        raise RewriteFailed(f"the LLM took longer than {config.timeout_s:g} s")
    if "error" in box:
        raise RewriteFailed(f"the LLM failed: {box['error']}") from box["error"]
    return box["text"]


class Rewriter:
    """Turns (state, message) into a `Rewrite`. `propose` is the `Session` hook.

    With `llm=None` (the `rules` backend) the LLM branch is never built and the rules answer directly.
    """

    def __init__(
        self,
        llm: LLM | None,
        config: RewriteConfig | None = None,
        parse: Callable[[str, QueryState], QueryUpdate] | None = None,
    ):
        self.llm, self.config = llm, config or RewriteConfig()
        self.parse = parse or _rules_parse()
        self.chain = self._build()

    def _build(self) -> Runnable:
        rules = RunnableLambda(self._rules)
        if self.llm is None:
            return rules
        if self.config.mode == "translate":
            llm_path = RunnableLambda(self._translated)
        else:
            llm_path = self._rewrite_path()
        return llm_path.with_fallbacks(
            [rules], exceptions_to_handle=(RewriteFailed, LLMError), exception_key="error"
        )

    def _rewrite_path(self) -> Runnable:
        return (
            RunnablePassthrough.assign(prompt=lambda x: rewrite_prompt(x["state"], x["message"]))
            | RunnablePassthrough.assign(
                raw=lambda x: '{"' + complete_within(self.llm, x["prompt"], self.config)
            )
            | RunnableLambda(self._from_llm)
        )

    def _rules(self, x: dict) -> Rewrite:
        update = self.parse(x["message"], x["state"])
        if self.llm is None:
            return Rewrite(update, "rules")
        return Rewrite(update, "fallback", reason=str(x.get("error", "")))

    def _from_llm(self, x: dict) -> Rewrite:
        update = parse_update(x["raw"])
        if self.config.mode == "merge":
            return Rewrite(merge(update, self.parse(x["message"], x["state"])), "merge", raw=x["raw"])
        if is_empty(update) and x["message"].strip():
            raise RewriteFailed("the LLM proposed no change")
        return Rewrite(update, "llm", raw=x["raw"])

    def _translated(self, x: dict) -> Rewrite:
        """The rules' update with each concept they kept as typed (another script) put into English."""
        update = self.parse(x["message"], x["state"])
        typed = {c for f in CONCEPT_FIELDS for c in getattr(update, f) if is_as_typed(c)}
        if not typed:
            return Rewrite(update, "rules")
        english = {
            c: english_phrase(complete_within(self.llm, translate_prompt(c), self.config, 16)) for c in typed
        }
        changes: dict = {f: [english.get(c, c) for c in getattr(update, f)] for f in CONCEPT_FIELDS}
        changes["notes"] = [*update.notes, *(f"read “{k}” as “{v}”" for k, v in english.items() if k != v)]
        raw = "; ".join(f"{k} -> {v}" for k, v in english.items())
        return Rewrite(update.model_copy(update=changes), "translate", raw=raw)

    def warm(self) -> threading.Thread | None:
        """Load the LLM in the background now, so the first turn that needs it does not time out."""
        if self.llm is None:
            return None
        worker = threading.Thread(target=_load_quietly, args=(self.llm,), daemon=True, name="llm-warm")
        worker.start()
        return worker

    def rewrite(self, state: QueryState, message: str) -> Rewrite:
        return self.chain.invoke({"state": state, "message": message})

    def propose(self, state: QueryState, message: str) -> QueryUpdate:
        return self.rewrite(state, message).update


def _load_quietly(llm: LLM) -> None:
    """A model that cannot load is reported by the turn that needs it (as a fallback reason)."""
    with contextlib.suppress(LLMError):
        llm.load()


def _rules_parse() -> Callable[[str, QueryState], QueryUpdate]:
    from assistant.rules import parse

    return parse


def make_rewriter(config: RewriteConfig | None = None, **llm_options) -> Rewriter:
    """The rewriter a config names; the LLM itself loads on the first turn."""
    from assistant.llms import get_llm

    config = config or RewriteConfig()
    return Rewriter(get_llm(config.llm, **llm_options), config)
