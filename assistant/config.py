"""Settings, typed and read once at the entry point from flags, then the environment, then defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from retrieval.library import LibraryConfig


@dataclass
class Settings:
    """Everything the CLI and the app need to open a library and talk to it.

    Environment: IMGCHAT_HOME (where indexes live), IMGCHAT_EMBEDDER, IMGCHAT_STORE, IMGCHAT_LLM.
    """

    library: LibraryConfig = field(default_factory=LibraryConfig)
    #: `offline`: the best packaged model that is installed (see assistant/llms.py), else the rules
    llm: str = "offline"
    #: how the LLM takes part in a turn: see assistant.rewrite.RewriteConfig
    rewrite_mode: str = "translate"

    @classmethod
    def from_env(cls, **flags) -> Settings:
        """Flags that are None fall back to the environment, then to the defaults."""
        env = {
            "embedder": os.environ.get("IMGCHAT_EMBEDDER"),
            "store": os.environ.get("IMGCHAT_STORE"),
            "llm": os.environ.get("IMGCHAT_LLM"),
        }
        values = {k: v for k, v in {**env, **{k: v for k, v in flags.items() if v is not None}}.items() if v}
        library_fields = set(LibraryConfig.__dataclass_fields__)
        library = LibraryConfig(**{k: v for k, v in values.items() if k in library_fields})
        return cls(
            library=library,
            llm=values.get("llm", cls.llm),
            rewrite_mode=values.get("rewrite_mode", cls.rewrite_mode),
        )
