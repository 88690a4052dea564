"""Where indexes live: one folder per indexed photo folder (or per `--index NAME`) under IMGCHAT_HOME."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path


def imgchat_home() -> Path:
    """`$IMGCHAT_HOME`, else the platform's user data directory."""
    if os.environ.get("IMGCHAT_HOME"):
        return Path(os.environ["IMGCHAT_HOME"]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "imgchat"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "imgchat"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "imgchat"


def default_index_dir(folder: str | Path) -> Path:
    """A stable index folder for a photo folder: readable name plus a hash of its absolute path."""
    folder = Path(folder).expanduser().resolve()
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", folder.name).strip("-") or "root"
    digest = hashlib.sha1(str(folder).encode()).hexdigest()[:8]
    return imgchat_home() / "indexes" / f"{slug}-{digest}"


def resolve_index(index: str | Path | None, folder: str | Path | None = None) -> Path:
    """`--index` may be a path or a bare name (kept under IMGCHAT_HOME); else derive it from the folder."""
    if index:
        index = str(index)
        if os.sep in index or index.startswith("."):
            return Path(index).expanduser().resolve()
        return imgchat_home() / "indexes" / index
    if folder is None:
        raise ValueError("give a folder or --index")
    return default_index_dir(folder)
