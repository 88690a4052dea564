"""A vector store on Milvus: embedded Milvus Lite (`milvus-lite:PATH`) or a server (`milvus://HOST:PORT`).

The same code talks to both. Rows are keyed by catalog id and carry the scalar fields a search filters
on (`date`, `folder`, `camera`), so a filtered search is one Milvus query with a boolean expression
instead of a scan in Python. The expressions reproduce `Catalog.ids_matching` exactly, including
SQLite's ASCII-only case-insensitive LIKE, so both stores return the same images for the same filter.

On disk (Lite): one folder `PATH` (a `.db` name, or `PATH/milvus.db` when PATH is a folder) that
Milvus Lite owns. Collection schema: `id` INT64 primary key, `vector` FLOAT_VECTOR(dim), and VARCHAR
`date` (ISO "YYYY-MM-DD HH:MM:SS" or ""), `folder` ("/" + parent folder + "/", ASCII-lowercased),
`camera` (ASCII-lowercased, "" when unknown).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from retrieval.query import Filter
from retrieval.stores.base import Hits, VectorStore, register

# Milvus refuses a larger top-k and larger batches are split by the client anyway.
MAX_TOPK = 16384
BATCH = 1000
FIELD_BYTES = {"date": 64, "folder": 8192, "camera": 256}
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class StoreMismatch(ValueError):
    """The Milvus collection holds vectors of another dimension."""


class StoreUnavailable(RuntimeError):
    """The Milvus server cannot be reached, or the Milvus Lite file is held by another process."""


@dataclass(frozen=True)
class IndexSpec:
    """The Milvus index type and its build and search parameters for one `kind`."""

    type: str
    build: dict
    search: dict


INDEX_SPECS = {
    "flat": IndexSpec("FLAT", {}, {}),
    "hnsw": IndexSpec("HNSW", {"M": 32, "efConstruction": 200}, {"ef": 128}),
    "ivf": IndexSpec("IVF_FLAT", {"nlist": 1024}, {"nprobe": 32}),
}


def connect_args(target: str) -> dict:
    """`MilvusClient` arguments for a server URL or a Milvus Lite path.

    Servers: `milvus://[user:password@]HOST[:PORT]` (or http/https/tcp). Lite: `milvus-lite:PATH` or
    a bare PATH, either a `.db` file name or a folder that gets `milvus.db` inside.
    """
    url = urlsplit(target)
    if url.scheme in ("milvus", "http", "https", "tcp"):
        if not url.hostname:
            raise ValueError(f"expected milvus://HOST:PORT, got {target!r}")
        args = {"uri": f"{'https' if url.scheme == 'https' else 'http'}://{url.hostname}:{url.port or 19530}"}
        if url.username:
            args["token"] = f"{url.username}:{url.password or ''}"
        return args
    path = Path(target.removeprefix("milvus-lite:")).expanduser()
    if not str(path) or str(path) == ".":
        raise ValueError(f"no Milvus Lite path in {target!r} (use milvus-lite:PATH or milvus://HOST:PORT)")
    if path.suffix != ".db":
        path = path / "milvus.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"uri": str(path)}


def collection_for(index_dir: str | Path) -> str:
    """A collection name per index folder, so that several indexes can share one Milvus server."""
    return "imgchat_" + re.sub(r"[^A-Za-z0-9_]", "_", Path(index_dir).name)[:200]


def _connect(client_class, args: dict):
    from pymilvus.exceptions import MilvusException

    try:
        return client_class(**args)
    except MilvusException as exc:
        uri = args["uri"]
        if uri.startswith("http"):
            raise StoreUnavailable(f"cannot reach Milvus at {uri}: {exc.message}") from exc
        raise StoreUnavailable(
            f"cannot open the Milvus Lite database {uri}: another process (an `imgchat serve` or `index`?) "
            "has it open, and Milvus Lite allows one at a time; stop it, or use a server (milvus://HOST:PORT). "
            f"Milvus said: {exc.message}"
        ) from exc


class MilvusStore(VectorStore):
    filters_natively = True

    def __init__(
        self, target: str, dim: int, metric: str = "ip", collection: str = "imgchat", kind: str = "auto"
    ):
        if metric not in ("ip", "l2"):
            raise ValueError(f"metric must be 'ip' or 'l2', not {metric!r}")
        kind = "flat" if kind == "auto" else kind
        if kind not in INDEX_SPECS:
            raise ValueError(f"index kind must be one of {', '.join(INDEX_SPECS)}, not {kind!r}")
        from pymilvus import MilvusClient

        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # it logs every error it also raises
        self.dim, self.metric, self.collection, self.spec = dim, metric, collection, INDEX_SPECS[kind]
        self.client = _connect(MilvusClient, connect_args(target))
        self._open()

    # --- collection ------------------------------------------------------------------------------
    def _open(self) -> None:
        if not self.client.has_collection(self.collection):
            self._create()
            return
        stored = self._stored_dim()
        if stored != self.dim:
            raise StoreMismatch(
                f"Milvus collection {self.collection!r} holds {stored}-d vectors, not {self.dim}-d; "
                "use another collection or drop it"
            )
        index = self.client.describe_index(self.collection, "vector") or {}
        if index.get("metric_type") != self._milvus_metric or index.get("index_type") != self.spec.type:
            self._rebuild_index()  # settings changed; the vectors themselves are still valid
        self.client.load_collection(self.collection)

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        for name, size in FIELD_BYTES.items():
            schema.add_field(name, DataType.VARCHAR, max_length=size)
        self.client.create_collection(
            self.collection, schema=schema, index_params=self._index_params(), consistency_level="Strong"
        )

    def _index_params(self):
        params = self.client.prepare_index_params()
        params.add_index(
            field_name="vector",
            index_type=self.spec.type,
            metric_type=self._milvus_metric,
            params=self.spec.build,
        )
        return params

    def _rebuild_index(self) -> None:
        self.client.release_collection(self.collection)
        self.client.drop_index(self.collection, "vector")
        self.client.create_index(self.collection, self._index_params())

    def _stored_dim(self) -> int:
        fields = self.client.describe_collection(self.collection)["fields"]
        return int(next(f for f in fields if f["name"] == "vector")["params"]["dim"])

    @property
    def _milvus_metric(self) -> str:
        return "IP" if self.metric == "ip" else "L2"

    # --- writes ----------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray, meta: Sequence[dict] | None = None) -> None:
        """Upsert rows: re-adding an id replaces it, so a crash and a rerun never duplicate."""
        ids = np.asarray(ids, np.int64)
        vectors = np.asarray(vectors, np.float32).reshape(len(ids), self.dim)
        meta = list(meta) if meta is not None else [{}] * len(ids)
        last = {int(i): n for n, i in enumerate(ids)}  # a repeated id within one call: the last row wins
        rows = [_row(i, vectors[n], meta[n]) for i, n in last.items()]
        for start in range(0, len(rows), BATCH):
            self.client.upsert(self.collection, rows[start : start + BATCH])

    def remove(self, ids: np.ndarray) -> None:
        ids = [int(i) for i in np.asarray(ids, np.int64)]
        for start in range(0, len(ids), BATCH):
            self.client.delete(self.collection, ids=ids[start : start + BATCH])

    # --- reads -----------------------------------------------------------------------------------
    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None, where: Filter | None = None
    ) -> Hits:
        """Top-k ids for one query vector, best first; `allowed` and `where` are pushed down to Milvus."""
        expr = filter_expression(where, allowed)
        if k <= 0 or expr is None:
            return Hits(np.zeros(0, np.int64), np.zeros(0, np.float32))
        result = self.client.search(
            self.collection,
            data=[np.asarray(query, np.float32).reshape(-1).tolist()],
            limit=min(k, MAX_TOPK),
            filter=expr,
            output_fields=["id"],
            search_params={"metric_type": self._milvus_metric, "params": self._search_params(k)},
        )[0]
        ids = np.array([hit["id"] for hit in result], np.int64)
        distances = np.array([hit["distance"] for hit in result], np.float32)
        return Hits(ids, distances if self.metric == "ip" else -distances)  # Milvus L2 is squared distance

    def _search_params(self, k: int) -> dict:
        if "ef" in self.spec.search:
            return {"ef": max(self.spec.search["ef"], k)}
        return dict(self.spec.search)

    def get(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of `ids`, in order; KeyError names ids that are not stored."""
        ids = [int(i) for i in np.asarray(ids, np.int64)]
        found: dict[int, list[float]] = {}
        for start in range(0, len(ids), BATCH):
            chunk = list(dict.fromkeys(ids[start : start + BATCH]))
            for row in self.client.get(self.collection, ids=chunk, output_fields=["vector"]):
                found[int(row["id"])] = row["vector"]
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"ids not in the Milvus store: {missing[:10]}")
        return np.array([found[i] for i in ids], np.float32).reshape(len(ids), self.dim)

    def ids(self) -> np.ndarray:
        iterator = self.client.query_iterator(
            self.collection, batch_size=BATCH, filter="", output_fields=["id"]
        )
        out: list[int] = []
        while batch := iterator.next():
            out += [int(row["id"]) for row in batch]
        iterator.close()
        return np.array(sorted(out), np.int64)

    def __len__(self) -> int:
        return int(self.client.query(self.collection, filter="", output_fields=["count(*)"])[0]["count(*)"])

    # --- persistence -----------------------------------------------------------------------------
    def save(self) -> None:
        """Milvus persists every write itself; flushing seals them so that a restart replays less."""
        self.client.flush(self.collection)

    def close(self) -> None:
        self.save()
        self.client.close()


def _row(file_id: int, vector: np.ndarray, meta: dict) -> dict:
    folder = str(meta.get("folder") or "")
    return {
        "id": file_id,
        "vector": vector.tolist(),
        "date": _fit(str(meta.get("date") or ""), "date"),
        # "/" + folder + "/" is what `Catalog.ids_matching` matches against as "/" + path.
        "folder": _fit(_ascii_lower(f"/{folder}/") if folder else "", "folder"),
        "camera": _fit(_ascii_lower(str(meta.get("camera") or "")), "camera"),
    }


def filter_expression(where: Filter | None, allowed: np.ndarray | None = None) -> str | None:
    """A Milvus boolean expression equal to `Catalog.ids_matching` ("" = no filter, None = nothing passes)."""
    parts = []
    if allowed is not None:
        if len(allowed) == 0:
            return None
        parts.append(f"id in [{','.join(str(int(i)) for i in allowed)}]")
    if where and where.date_from:
        parts.append(f"date >= {_literal(where.date_from)}")
    if where and where.date_to:
        parts.append(f'date != "" and date <= {_literal(where.date_to + chr(0xFFFF))}')
    if where and where.folder:
        parts.append(f"folder like {_literal('%/' + _like(_ascii_lower(where.folder.strip('/'))) + '/%')}")
    if where and where.camera:
        parts.append(f"camera like {_literal('%' + _like(_ascii_lower(where.camera)) + '%')}")
    return " and ".join(parts)


def _literal(text: str) -> str:
    """A Milvus string literal: backslashes and double quotes escaped, everything else verbatim (UTF-8)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _ascii_lower(text: str) -> str:
    """Lowercase A-Z only, as SQLite's LIKE compares: filters then match what the catalog matches."""
    return text.translate(_ASCII_LOWER)


def _fit(text: str, field: str) -> str:
    """Truncate to the field's byte limit on a character boundary."""
    return text.encode()[: FIELD_BYTES[field]].decode(errors="ignore")


@register("milvus-lite")
@register("milvus")
def open_milvus(
    target: str, dim: int, metric: str = "ip", collection: str = "imgchat", kind: str = "auto"
) -> MilvusStore:
    """Factory for `milvus-lite:PATH` (embedded, no server) and `milvus://HOST:PORT` (standalone or cluster)."""
    return MilvusStore(target, dim, metric, collection, kind)
