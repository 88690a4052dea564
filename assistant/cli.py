"""`imgchat`: index, search, chat and serve. A thin layer over the library API: it parses flags,
calls the library, and turns the library's exceptions into one-line messages."""

from __future__ import annotations

import json
import sys

import click
from tqdm import tqdm

from assistant.config import Settings
from retrieval.catalog import CatalogMismatch
from retrieval.embedders.base import ModelUnavailable, UnknownEmbedder
from retrieval.images import ImageError, load_image
from retrieval.library import Library
from retrieval.paths import imgchat_home, resolve_index
from retrieval.query import Query, split_concepts

KNOWN_ERRORS = (CatalogMismatch, UnknownEmbedder, ModelUnavailable, ImageError, FileNotFoundError, ValueError)


def store_options(f):
    """Flags shared by every command that opens an index."""
    f = click.option("--index", "index", help="index folder or name (default: derived from FOLDER)")(f)
    f = click.option("--embedder", help="bundled (offline default), clip:HUB_ID_OR_FOLDER, siglip:..., fake")(
        f
    )
    f = click.option("--store", help="faiss (default), milvus-lite:PATH, milvus://HOST:PORT")(f)
    return f


def open_library(
    settings: Settings, index: str | None, folder: str | None, reset: bool = False, create: bool = False
) -> Library:
    """Open the index named by --index or derived from FOLDER; only `imgchat index` creates one."""
    if not index and not folder:
        index = _only_index()
    path = resolve_index(index, folder)
    if not create and not (path / "catalog.sqlite").exists():
        raise click.UsageError(f"no index at {path}: run `imgchat index FOLDER` first")
    return Library.open(path, settings.library, reset=reset)


def _only_index() -> str:
    """With no --index, use the one index there is, or say which ones exist."""
    indexes = sorted(p for p in (imgchat_home() / "indexes").glob("*") if (p / "catalog.sqlite").exists())
    if len(indexes) == 1:
        return str(indexes[0])
    if not indexes:
        raise click.UsageError("no index yet: run `imgchat index FOLDER` first")
    names = ", ".join(p.name for p in indexes)
    raise click.UsageError(f"several indexes ({names}): choose one with --index NAME")


@click.group()
@click.version_option(package_name="imgchat")
def cli():
    """Search your own photos by talking to them."""


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@store_options
@click.option("--metric", type=click.Choice(["ip", "l2"]), help="similarity: ip (cosine, default) or l2")
@click.option("--kind", type=click.Choice(["auto", "flat", "hnsw"]), help="FAISS index: exact flat or HNSW")
@click.option("--max-megapixels", type=float, help="skip images larger than this (default 100)")
@click.option("--reindex", is_flag=True, help="drop the existing index and start afresh")
@click.option(
    "--processes", type=int, default=1, show_default=True, help="embed with N processes (accelerate)"
)
def index(folder, index, embedder, store, metric, kind, max_megapixels, reindex, processes):
    """Index the images under FOLDER (incremental: only new and changed files are embedded)."""
    settings = Settings.from_env(
        embedder=embedder, store=store, metric=metric, kind=kind, max_megapixels=max_megapixels
    )
    with _errors():
        library = open_library(settings, index, folder, reset=reindex, create=True)
        say = lambda path, why: tqdm.write(f"skipped {path}: {why}", file=sys.stderr)  # noqa: E731
        if processes > 1:
            from retrieval.shard import index_sharded

            report = index_sharded(library, folder, processes, on_skip=say)
        else:
            report = library.index(folder, on_skip=say)
        click.echo(f"{report.summary()}\nindex: {library.index_dir} ({len(library)} images)")
        library.close()


@cli.command()
@click.argument("query", required=False, default="")
@click.option(
    "--image", "images", multiple=True, type=click.Path(exists=True, dir_okay=False), help="example image"
)
@click.option("--not", "negatives", multiple=True, help="a concept the images must not show (repeatable)")
@click.option("-k", "k", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the ranked results as JSON lines")
@click.option("--folder", help="the indexed folder (instead of --index)")
@store_options
def search(query, images, negatives, k, as_json, folder, index, embedder, store):
    """Search by text ("cats, not black"), by --image, or both ("like this but at night")."""
    positive, negative = split_concepts(query)
    negative += [(n, 1.0) for n in negatives]
    with _errors():
        if not positive and not images:
            raise click.UsageError("give a QUERY, an --image, or both")
        library = open_library(Settings.from_env(embedder=embedder, store=store), index, folder)
        example = [load_image(p) for p in images]
        results = library.search(Query(positive=positive, negative=negative, images=example, k=k))
        for rank, r in enumerate(results, 1):
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "rank": rank,
                            "path": r.path,
                            "score": round(r.score, 4),
                            "explanation": r.explanation,
                        }
                    )
                )
            else:
                click.echo(f"{rank:>3}  {r.score:6.3f}  {r.path}\n      {r.explanation}")
        if not results and not as_json:
            click.echo("no results", err=True)


class _errors:
    """Turn the library's expected exceptions into one line on stderr and exit status 1."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type and issubclass(exc_type, KNOWN_ERRORS) and not issubclass(exc_type, click.ClickException):
            click.echo(f"imgchat: {exc}", err=True)
            sys.exit(1)
        return False


def main():
    cli(prog_name="imgchat")


if __name__ == "__main__":
    main()
