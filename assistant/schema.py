"""The structured update that one chat turn proposes, as the LLM must emit it and the rules produce it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Filters(BaseModel):
    """Catalog filters a turn may set. Dates are ISO prefixes: `2019`, `2019-07`, `2019-07-14`."""

    model_config = ConfigDict(extra="ignore")

    date_from: str | None = None
    date_to: str | None = None
    folder: str | None = None
    camera: str | None = None


class QueryUpdate(BaseModel):
    """What a turn changes in the search. Positions in `more_like`/`less_like` are 1-based ranks of the
    results shown last ("the second one" -> 2). Concepts are short English noun phrases."""

    model_config = ConfigDict(extra="ignore")

    reset: bool = Field(False, description="start over: drop everything said before this turn")
    replace: bool = Field(False, description="the new concepts replace the current subject")
    add: list[str] = Field(default_factory=list, description="concepts the images should show")
    remove: list[str] = Field(default_factory=list, description="earlier concepts to drop")
    exclude: list[str] = Field(default_factory=list, description="concepts the images must not show")
    more_like: list[int] = Field(
        default_factory=list, description="1-based ranks of shown results to find more like"
    )
    less_like: list[int] = Field(default_factory=list, description="1-based ranks of shown results to avoid")
    filters: Filters = Field(default_factory=Filters)
    notes: list[str] = Field(default_factory=list, description="how the turn was read, shown to the person")
