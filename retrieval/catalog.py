"""The catalog: one SQLite file that is the source of truth for files, their metadata and their vectors.

Vectors are kept here by content hash (so a moved or copied photo reuses its vector) and the vector
store is derived from this table: after a crash the store is brought back in line with the catalog
(`Library` does it on open), which is what makes indexing safe to kill at any moment.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.query import Filter

SCHEMA_VERSION = 2


class CatalogMismatch(Exception):
    """The index was built with another embedder, dimension or metric."""


@dataclass
class FileRow:
    path: str
    size: int
    mtime_ns: int
    hash: str | None
    status: str  # "ok" or "failed"
    width: int | None = None
    height: int | None = None
    date: str | None = None
    camera: str | None = None
    error: str | None = None
    id: int | None = None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    folder TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT,
    status TEXT NOT NULL,
    width INTEGER, height INTEGER,
    date TEXT, camera TEXT,
    error TEXT,
    -- 0 until the vector store has been saved with this row's current vector (crash recovery)
    synced INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS files_hash ON files(hash);
CREATE INDEX IF NOT EXISTS files_date ON files(date);
CREATE TABLE IF NOT EXISTS vectors (hash TEXT PRIMARY KEY, vector BLOB NOT NULL, tags TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (path TEXT PRIMARY KEY);
"""


class Catalog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a catalog written by an older imgchat up to SCHEMA_VERSION, one named step at a time."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(files)")}
        if "synced" not in columns:
            m002_synced(self.db)
        if self.db.execute("SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone():
            self.db.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version' AND CAST(value AS INTEGER) < ?",
                (str(SCHEMA_VERSION), SCHEMA_VERSION),
            )

    # --- identity of the vector space -------------------------------------------------------------
    def check_space(
        self, embedder_id: str, dim: int, metric: str, spec: str = "", kind: str = "auto"
    ) -> None:
        """Record the embedder, dimension, metric and index kind on first use; refuse another embedder
        later, and record a changed metric or kind (the store is rebuilt; vectors do not change)."""
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
        wanted = {
            "schema_version": str(SCHEMA_VERSION),
            "embedder": embedder_id,
            "embedder_spec": spec or embedder_id,
            "dim": str(dim),
            "metric": metric,
            "kind": kind,
        }
        if not meta:
            self._write_meta(wanted)
            return
        if int(meta.get("schema_version", 0)) > SCHEMA_VERSION:
            raise CatalogMismatch(
                f"{self.path.parent} was written by a newer imgchat (schema {meta['schema_version']}); upgrade imgchat"
            )
        if meta.get("embedder") != embedder_id or meta.get("dim") != str(dim):
            raise CatalogMismatch(
                f"{self.path.parent} was built with embedder {meta.get('embedder')!r} ({meta.get('dim')}-d), "
                f"not {embedder_id!r} ({dim}-d); re-index with `imgchat index FOLDER --embedder "
                f"{spec or embedder_id} --reindex` or use another --index"
            )
        if meta.get("metric") != metric or meta.get("kind") != kind:
            self._write_meta({"metric": metric, "kind": kind})

    def stored_space(self) -> dict:
        return dict(self.db.execute("SELECT key, value FROM meta"))

    def _write_meta(self, values: dict) -> None:
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())

    # --- writes ----------------------------------------------------------------------------------
    def transaction(self):
        return _Transaction(self.db)

    def add_root(self, folder: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO roots VALUES (?)", (folder,))

    def roots(self) -> list[str]:
        return [r for (r,) in self.db.execute("SELECT path FROM roots ORDER BY path")]

    def put_files(self, rows: Iterable[FileRow]) -> list[int]:
        """Insert or update file rows (inside the caller's transaction); returns their ids."""
        ids = []
        for r in rows:
            folder = str(Path(r.path).parent)
            cur = self.db.execute(
                """INSERT INTO files (path, folder, size, mtime_ns, hash, status, width, height, date, camera, error)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(path) DO UPDATE SET synced=0, folder=excluded.folder, size=excluded.size,
                     mtime_ns=excluded.mtime_ns, hash=excluded.hash, status=excluded.status,
                     width=excluded.width, height=excluded.height, date=excluded.date,
                     camera=excluded.camera, error=excluded.error
                   RETURNING id""",
                (
                    r.path,
                    folder,
                    r.size,
                    r.mtime_ns,
                    r.hash,
                    r.status,
                    r.width,
                    r.height,
                    r.date,
                    r.camera,
                    r.error,
                ),
            )
            ids.append(cur.fetchone()[0])
        return ids

    def put_vectors(self, hashes: list[str], vectors: np.ndarray, tags: list[list]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
            [
                (h, np.asarray(v, np.float32).tobytes(), json.dumps(t))
                for h, v, t in zip(hashes, vectors, tags or [[]] * len(hashes), strict=True)
            ],
        )

    def delete_paths(self, paths: list[str]) -> list[int]:
        ids = []
        for chunk in _chunks(paths, 500):
            marks = ",".join("?" * len(chunk))
            ids += [i for (i,) in self.db.execute(f"SELECT id FROM files WHERE path IN ({marks})", chunk)]
            self.db.execute(f"DELETE FROM files WHERE path IN ({marks})", chunk)
        return ids

    def mark_synced(self) -> None:
        """Call after the vector store was saved: every committed row's vector is in it."""
        self.db.execute("UPDATE files SET synced = 1 WHERE synced = 0")

    def unsynced_ids(self) -> np.ndarray:
        """Ids whose vector may be newer than the saved store's (a crash between commit and save)."""
        rows = self.db.execute("SELECT id FROM files WHERE synced = 0 AND status = 'ok'").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def ok_among(self, ids) -> list[int]:
        """The ids that are still indexed (feedback may name images removed since)."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        found = {
            i
            for (i,) in self.db.execute(f"SELECT id FROM files WHERE status = 'ok' AND id IN ({marks})", ids)
        }
        return [i for i in ids if i in found]

    def drop_orphan_vectors(self) -> int:
        cur = self.db.execute(
            "DELETE FROM vectors WHERE hash NOT IN (SELECT hash FROM files WHERE hash IS NOT NULL)"
        )
        return cur.rowcount

    # --- reads -----------------------------------------------------------------------------------
    def files_under(self, folder: str) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, status) for every catalogued file under `folder`."""
        prefix = folder.rstrip("/") + "/"
        rows = self.db.execute(
            "SELECT path, size, mtime_ns, status FROM files WHERE substr(path, 1, ?) = ?",
            (len(prefix), prefix),
        )
        return {p: (s, m, st) for p, s, m, st in rows}

    def has_vector(self, content_hash: str) -> bool:
        return self.db.execute("SELECT 1 FROM vectors WHERE hash = ?", (content_hash,)).fetchone() is not None

    def ok_ids(self) -> np.ndarray:
        rows = self.db.execute("SELECT id FROM files WHERE status = 'ok' ORDER BY id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def count(self, status: str = "ok") -> int:
        return self.db.execute("SELECT count(*) FROM files WHERE status = ?", (status,)).fetchone()[0]

    def vectors_for(self, ids: np.ndarray, dim: int) -> np.ndarray:
        """Vectors of file ids, in order (zeros for ids without one)."""
        out = np.zeros((len(ids), dim), np.float32)
        pos = {int(i): n for n, i in enumerate(ids)}
        for chunk in _chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            q = f"SELECT f.id, v.vector FROM files f JOIN vectors v ON v.hash = f.hash WHERE f.id IN ({marks})"
            for i, blob in self.db.execute(q, chunk):
                out[pos[i]] = np.frombuffer(blob, np.float32)
        return out

    def iter_vectors(
        self, ids: np.ndarray, dim: int, batch: int = 10000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(ids), batch):
            part = ids[start : start + batch]
            yield part, self.vectors_for(part, dim)

    def meta_for(self, ids: np.ndarray) -> list[dict]:
        """Scalar fields for stores that filter natively (date, folder, camera)."""
        out = {}
        for chunk in _chunks([int(i) for i in ids], 500):
            marks = ",".join("?" * len(chunk))
            q = f"SELECT id, date, folder, camera FROM files WHERE id IN ({marks})"
            for i, date, folder, camera in self.db.execute(q, chunk):
                out[i] = {"date": date or "", "folder": folder, "camera": camera or ""}
        return [out.get(int(i), {"date": "", "folder": "", "camera": ""}) for i in ids]

    def record(self, file_id: int) -> dict | None:
        row = self.db.execute(
            """SELECT f.id, f.path, f.width, f.height, f.date, f.camera, v.tags FROM files f
               LEFT JOIN vectors v ON v.hash = f.hash WHERE f.id = ? AND f.status = 'ok'""",
            (int(file_id),),
        ).fetchone()
        if row is None:
            return None
        keys = ("id", "path", "width", "height", "date", "camera")
        out = dict(zip(keys, row[:6], strict=True))
        out["tags"] = [tuple(t) for t in json.loads(row[6] or "[]")]
        return out

    def id_for_path(self, path: str) -> int | None:
        row = self.db.execute("SELECT id FROM files WHERE path = ? AND status = 'ok'", (path,)).fetchone()
        return row[0] if row else None

    def ids_matching(self, flt: Filter) -> np.ndarray:
        """Ids of indexed files that pass a filter (for stores that cannot filter natively)."""
        sql, args = ["SELECT id FROM files WHERE status = 'ok'"], []
        if flt.date_from:
            sql.append("AND date >= ?")
            args.append(flt.date_from)
        if flt.date_to:
            sql.append("AND date <= ?")
            args.append(flt.date_to + "\uffff")
        if flt.folder:
            sql.append("AND ('/' || path) LIKE ? ESCAPE '\\'")
            args.append("%/" + _like(flt.folder.strip("/")) + "/%")
        if flt.camera:
            sql.append("AND camera LIKE ? ESCAPE '\\'")
            args.append("%" + _like(flt.camera) + "%")
        return np.array([i for (i,) in self.db.execute(" ".join(sql), args)], dtype=np.int64)

    def failures(self) -> list[tuple[str, str]]:
        return list(self.db.execute("SELECT path, error FROM files WHERE status = 'failed' ORDER BY path"))

    def close(self) -> None:
        self.db.close()


def m002_synced(db: sqlite3.Connection) -> None:
    """v2: a per-file flag saying the saved vector store holds the row's current vector, so that a
    crash between a commit and a store save is repaired on open. Old rows start unsynced (re-added once)."""
    db.execute("ALTER TABLE files ADD COLUMN synced INTEGER NOT NULL DEFAULT 0")


class _Transaction:
    """`with catalog.transaction():` commits on success, rolls back on error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]
