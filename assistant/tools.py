"""The photo search as LangChain parts: a structured tool, a retriever, and the turn chain.

They sit over `retrieval.library.Library` so that any LangChain agent can search a collection the same
way the chat does, without touching FAISS or the catalog.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import StructuredTool
from pydantic import BaseModel, ConfigDict, Field

from assistant import conversation
from assistant.rewrite import Rewriter
from retrieval.query import Filter, Query, Result


class SearchArgs(BaseModel):
    """What the search tool takes: the fields of a `retrieval.query.Query` that text can express."""

    positive: list[str] = Field(description="what the photos should show, short English phrases")
    negative: list[str] = Field(default_factory=list, description="what the photos must not show")
    like_ids: list[int] = Field(default_factory=list, description="ids of photos to find more like")
    dislike_ids: list[int] = Field(default_factory=list, description="ids of photos to avoid and hide")
    date_from: str | None = Field(None, description="earliest date, YYYY or YYYY-MM or YYYY-MM-DD")
    date_to: str | None = Field(None, description="latest date, same format")
    folder: str | None = Field(None, description="only photos under this folder")
    camera: str | None = Field(None, description="only photos from this camera")
    k: int = Field(12, ge=1, le=100, description="how many results")


def to_query(args: SearchArgs) -> Query:
    return Query(
        positive=[(text, 1.0) for text in args.positive],
        negative=[(text, 1.0) for text in args.negative],
        like_ids=list(args.like_ids),
        dislike_ids=list(args.dislike_ids),
        exclude_ids=list(args.dislike_ids),
        filter=Filter(args.date_from, args.date_to, args.folder, args.camera),
        k=args.k,
    )


def as_dict(result: Result) -> dict:
    """A result as JSON-able data, for a tool's answer or a Document's metadata."""
    meta = result.meta or {}
    return {
        "id": int(result.id),
        "path": result.path,
        "score": round(float(result.score), 4),
        "explanation": result.explanation,
        "tags": [label for label, _ in result.tags],
        "date": meta.get("date"),
    }


def search_tool(library) -> StructuredTool:
    """`search_photos`: the library's search as a tool an agent can call with structured arguments."""

    def search_photos(**fields: Any) -> list[dict]:
        return [as_dict(r) for r in library.search(to_query(SearchArgs(**fields)))]

    return StructuredTool.from_function(
        func=search_photos,
        name="search_photos",
        description="Search the user's indexed photos by what they show; returns ranked photos with paths.",
        args_schema=SearchArgs,
    )


class PhotoRetriever(BaseRetriever):
    """A retriever over the library: a text query in, one `Document` per photo out (content = path)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    library: Any
    k: int = 12

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        results = self.library.search(Query(positive=[(query, 1.0)], k=self.k))
        return [Document(page_content=r.path, metadata=as_dict(r)) for r in results]


def turn_chain(rewriter: Rewriter, library, k: int = 12) -> Runnable:
    """History + turn → rewrite → search tool → answer, as one Runnable over {"state", "message"}.

    Returns {"state", "rewrite", "results", "answer"}. `Session.turn` does the same with uploads and
    thumbs; this chain is the text-only path for LangChain callers.
    """
    tool = search_tool(library)

    def step(x: dict) -> dict:
        rewrite = rewriter.rewrite(x["state"], x["message"])
        state = conversation.apply(x["state"], rewrite.update)
        if state.is_empty():
            return {
                "state": state,
                "rewrite": rewrite,
                "results": [],
                "answer": conversation.describe(state, 0),
            }
        results = tool.invoke(_tool_args(conversation.to_query(state, k)))
        answer = conversation.describe(state, len(results))
        state = conversation.with_results(state, [r["id"] for r in results], x["message"], answer)
        return {"state": state, "rewrite": rewrite, "results": results, "answer": answer}

    return RunnableLambda(step)


def _tool_args(query: Query) -> dict:
    f = query.filter
    return {
        "positive": [text for text, _ in query.positive],
        "negative": [text for text, _ in query.negative],
        "like_ids": query.like_ids,
        "dislike_ids": query.dislike_ids,
        "date_from": f.date_from,
        "date_to": f.date_to,
        "folder": f.folder,
        "camera": f.camera,
        "k": query.k,
    }
