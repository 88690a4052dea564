"""`imgchat`: index, search, chat and serve. A thin layer over the library API: it parses flags,
calls the library, and turns the library's exceptions into one-line messages."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from tqdm import tqdm

from assistant.config import Settings
from retrieval.catalog import CatalogMismatch
from retrieval.embedders.base import ModelUnavailable, UnknownEmbedder
from retrieval.images import ImageError, load_image
from retrieval.library import NEAR_DUPLICATE, Library
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
        report = library.index(folder, on_skip=say, processes=processes)
        if processes > 1 or os.environ.get("WORLD_SIZE"):
            from retrieval.shard import finish

            finish()
        if os.environ.get("RANK", "0") == "0":  # under `accelerate launch`, rank 0 speaks for all
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


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--threshold",
    type=float,
    default=NEAR_DUPLICATE,
    show_default=True,
    help="image similarity to count as the same picture",
)
@click.option("--folder", help="the indexed folder (instead of --index)")
@store_options
def duplicates(images, threshold, folder, index, embedder, store):
    """Is each IMAGE already in the index (your library, or a set of known fakes)?

    Prints the matches of each IMAGE; exits 0 when any IMAGE has one, 1 when none has (like grep).
    """
    with _errors():
        library = open_library(Settings.from_env(embedder=embedder, store=store), index, folder)
        found = 0
        for path in images:
            matches = library.near_duplicates(load_image(path), threshold)
            found += bool(matches)
            click.echo(
                f"{path}: " + ("; ".join(f"{m.path} ({m.score:.3f})" for m in matches) or "no near-duplicate")
            )
        sys.exit(0 if found else 1)


def llm_option(f):
    f = click.option(
        "--rewrite",
        "rewrite_mode",
        type=click.Choice(["translate", "merge", "llm"]),
        help="translate (default): rules parse, the LLM translates non-English; merge/llm: the LLM rewrites whole turns as JSON",
    )(f)
    return click.option(
        "--llm",
        help="turn rewriter: offline (default: the best packaged model installed, else rules), rules, smollm2, "
        "gemma3, transformers:HUB_ID_OR_FOLDER, llamacpp:GGUF",
    )(f)


def make_session(library: Library, settings: Settings, k: int = 12, wait_for_llm: bool = False):
    """A chat session whose turns are rewritten by the configured LLM, falling back to the rules.

    The LLM loads in the background at once, so the first turn that needs it does not time out;
    `wait_for_llm` blocks until it has loaded (scripted runs, where every turn must be the LLM's).
    """
    from assistant.rewrite import RewriteConfig, make_rewriter
    from assistant.session import Session

    rewriter = make_rewriter(RewriteConfig(llm=settings.llm, mode=settings.rewrite_mode))
    loading = rewriter.warm()
    if loading and wait_for_llm:
        loading.join()
    return Session(library, rewriter.propose, k=k)


@cli.command()
@click.option(
    "--script", type=click.Path(exists=True, dir_okay=False), help="run the JSON-lines turns in FILE"
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object per turn")
@click.option("-k", "k", type=int, default=12, show_default=True)
@click.option("--folder", help="the indexed folder (instead of --index)")
@store_options
@llm_option
def chat(script, as_json, k, folder, index, embedder, store, llm, rewrite_mode):
    """Chat with your photos in the terminal, or run a scripted conversation (--script FILE).

    FILE holds one JSON object per turn: {"text": ..., "image": PATH?, "more_like": PATH?, "up": [PATH...]?,
    "down": [PATH...]?}; relative paths are read from FILE's folder.
    """
    from assistant.chat import repl, run_script

    with _errors():
        settings = Settings.from_env(embedder=embedder, store=store, llm=llm, rewrite_mode=rewrite_mode)
        session = make_session(open_library(settings, index, folder), settings, k, wait_for_llm=bool(script))
        if not script:
            repl(session)
            return
        with open(script, encoding="utf-8") as lines:
            for out in run_script(session, lines, base=Path(script).parent):
                if as_json:
                    click.echo(json.dumps(out, ensure_ascii=False))
                else:
                    click.echo(f"you> {out['text']}\n" + (out.get("error") or out["searched"]))
                    for rank, r in enumerate(out["results"], 1):
                        click.echo(f"{rank:>3}. {r['score']:6.3f}  {r['path']}")


@cli.command()
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False))
@store_options
@llm_option
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 to serve your network")
@click.option("--port", type=int, help="default: the first free port from 7860")
@click.option("--share", is_flag=True, help="make a public Gradio link (requires --auth)")
@click.option("--auth", help="USER:PASSWORD, or a file of such lines")
def serve(folder, index, embedder, store, llm, rewrite_mode, host, port, share, auth):
    """Open the chat in your browser over FOLDER (indexed in the background), or over a demo gallery."""
    from assistant import app, demo

    with _errors():
        options = app.LaunchOptions(
            host=host, port=port, share=share, auth=app.parse_auth(auth) if auth else []
        )
        app.check_share(options)
        examples: tuple[str, ...] = ()
        if folder is None:
            folder, examples = demo.prepare_demo(imgchat_home() / "demo"), demo.EXAMPLES
            click.echo(f"no folder given: serving a demo gallery of real photos from {folder}")
        settings = Settings.from_env(embedder=embedder, store=store, llm=llm, rewrite_mode=rewrite_mode)
        library = open_library(settings, index, str(folder), create=True)
        config = app.AppConfig(cache_dir=imgchat_home() / "cache", examples=examples)
        served = app.serve(make_session(library, settings), library, config, options, Path(folder))
        click.echo(f"imgchat is running at {served.share_url or served.local_url} (Ctrl-C to stop)")
        for note in served.notes:
            click.echo(note)
        served.wait()


class _errors:
    """Turn the library's expected exceptions into one line on stderr and exit status 1."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if (
            exc_type
            and issubclass(exc_type, _known_errors())
            and not issubclass(exc_type, click.ClickException)
        ):
            click.echo(f"imgchat: {exc}", err=True)
            sys.exit(1)
        return False


# Errors of modules that load lazily (gradio, LLMs): known only once their module is imported.
LAZY_ERRORS = {"assistant.demo": ("DemoUnavailable",), "assistant.llms": ("LLMError",)}


def _known_errors() -> tuple[type, ...]:
    lazy = [getattr(sys.modules[m], n) for m, names in LAZY_ERRORS.items() if m in sys.modules for n in names]
    return (*KNOWN_ERRORS, *lazy)


def main():
    cli(prog_name="imgchat")


if __name__ == "__main__":
    main()
