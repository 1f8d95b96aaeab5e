"""Offline model folders: real figures, a tokenizer of exactly vocab_size, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from kvexp.config import ModelConfig
from kvexp.models import (
    IM_END,
    MARKER,
    ModelFolderError,
    build_vocab,
    ensure_model_folder,
    model_ref,
)
from tests.conftest import REPO_ROOT, model_from_conf

SENTENCE = "Explain how a KV cache speeds up transformer inference, in 2025? Yes.\nNew line!"


def qwen25_05b(**kw: object) -> ModelConfig:
    return model_from_conf("qwen2.5-0.5b-instruct", **kw)


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    t0 = time.monotonic()
    folder = ensure_model_folder(qwen25_05b(), tmp_path_factory.mktemp("models"))
    assert time.monotonic() - t0 < 10.0
    assert folder is not None
    return folder


def test_config_has_the_real_figures(qwen_folder: Path) -> None:
    cfg = json.loads((qwen_folder / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"]
    assert cfg["model_type"] == "qwen2"
    assert cfg["num_hidden_layers"] == 24
    assert cfg["num_attention_heads"] == 14
    assert cfg["num_key_value_heads"] == 2
    assert cfg["head_dim"] == 64
    assert cfg["hidden_size"] == 896
    assert cfg["intermediate_size"] == 4864
    assert cfg["vocab_size"] == 151936
    assert cfg["max_position_embeddings"] == 32768
    assert cfg["rope_theta"] == 1000000.0
    assert cfg["rms_norm_eps"] == 1e-6
    assert cfg["tie_word_embeddings"] is True
    assert cfg["torch_dtype"] == "bfloat16"
    gen = json.loads((qwen_folder / "generation_config.json").read_text())
    assert gen["eos_token_id"] == cfg["eos_token_id"]
    marker = json.loads((qwen_folder / MARKER).read_text())
    assert marker["kind"] == "shape-only" and "meaningless" in marker["note"]


def test_tokenizer_vocab_and_round_trip(qwen_folder: Path) -> None:
    tok = Tokenizer.from_file(str(qwen_folder / "tokenizer.json"))
    assert tok.get_vocab_size(with_added_tokens=True) == 151936
    assert max(tok.get_vocab().values()) == 151935
    enc = tok.encode(SENTENCE)
    assert tok.decode(enc.ids) == SENTENCE
    assert len(enc.ids) < 40  # common words after a space are single tokens
    cfg = json.loads((qwen_folder / "config.json").read_text())
    assert tok.token_to_id(IM_END) == cfg["eos_token_id"]
    # every id decodes (random weights sample any of them)
    assert all(tok.decode([i]) for i in range(0, 151936, 997) if i > 2)


def test_vocab_is_exact_for_small_sizes() -> None:
    for size in (512, 2000, 10007):
        vocab, merges = build_vocab(size)
        assert len(vocab) == size and sorted(vocab.values()) == list(range(size))
        assert all(a + b in vocab for a, b in merges)


def test_reused_on_second_call(tmp_path: Path) -> None:
    model = qwen25_05b(vocab_size=4096)
    folder = ensure_model_folder(model, tmp_path)
    assert folder == tmp_path / "qwen2.5-0.5b-instruct"
    mtime = (folder / "tokenizer.json").stat().st_mtime_ns
    assert ensure_model_folder(model, tmp_path) == folder
    assert (folder / "tokenizer.json").stat().st_mtime_ns == mtime
    changed = ensure_model_folder(qwen25_05b(vocab_size=4096, num_layers=12), tmp_path)
    assert json.loads((changed / "config.json").read_text())["num_hidden_layers"] == 12
    assert [p.name for p in tmp_path.iterdir()] == ["qwen2.5-0.5b-instruct"]  # no temp folders left


def test_offline_path_overrides_models_dir(tmp_path: Path) -> None:
    folder = ensure_model_folder(qwen25_05b(vocab_size=1024, path=str(tmp_path / "x")), tmp_path)
    assert folder == tmp_path / "x"
    assert model_ref(qwen25_05b(vocab_size=1024, path=str(folder)), tmp_path) == (str(folder), True)


def test_foreign_folder_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "qwen2.5-0.5b-instruct").mkdir()
    (tmp_path / "qwen2.5-0.5b-instruct" / "weights.bin").write_text("x")
    with pytest.raises(ModelFolderError, match="not written by kvexp"):
        ensure_model_folder(qwen25_05b(), tmp_path)


def test_local_source_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ModelFolderError, match=f"model folder {missing} does not exist"):
        ensure_model_folder(qwen25_05b(source="local", path=str(missing)), tmp_path)
    missing.mkdir()
    with pytest.raises(ModelFolderError, match="has no config.json"):
        ensure_model_folder(qwen25_05b(source="local", path=str(missing)), tmp_path)
    with pytest.raises(ModelFolderError, match="needs model.path"):
        ensure_model_folder(qwen25_05b(source="local"), tmp_path)
    (missing / "config.json").write_text("{}")
    local = qwen25_05b(source="local", path=str(missing))
    assert ensure_model_folder(local, tmp_path) == missing
    assert model_ref(local, tmp_path) == (str(missing), False)


def test_hub_source(tmp_path: Path) -> None:
    hub = qwen25_05b(source="hub")
    assert ensure_model_folder(hub, tmp_path) is None
    assert model_ref(hub, tmp_path) == ("Qwen/Qwen2.5-0.5B-Instruct", False)
    with pytest.raises(ModelFolderError, match="needs model.hub_id"):
        model_ref(qwen25_05b(source="hub", hub_id=None), tmp_path)


def test_bad_shape_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="head_dim x num_attention_heads"):
        ensure_model_folder(qwen25_05b(head_dim=128), tmp_path)


def kvexp_models(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m kvexp.models ARGS`, importing kvexp from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "kvexp.models", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=REPO_ROOT)


def test_python_m_kvexp_models_writes_a_conf_model(tmp_path: Path) -> None:
    out = kvexp_models("tiny", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    folder = Path(out.stdout.strip())
    assert folder == tmp_path / "tiny"
    config = json.loads((folder / "config.json").read_text())
    assert config["vocab_size"] == model_from_conf("tiny").vocab_size
    assert (folder / MARKER).is_file()


def test_python_m_kvexp_models_names_an_unknown_model(tmp_path: Path) -> None:
    out = kvexp_models("no-such-model", "--out", str(tmp_path))
    assert out.returncode != 0
    assert "no model 'no-such-model'" in out.stderr
    assert list(tmp_path.iterdir()) == []


CHECK_WITH_TRANSFORMERS = """
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
text = tok.apply_chat_template(
    [{"role": "user", "content": "Hello there."}], tokenize=False, add_generation_prompt=True
)
ids = tok(sys.argv[2])["input_ids"]
print(json.dumps({"len": len(tok), "chat": text, "round_trip": tok.decode(ids),
                  "eos": tok.eos_token_id, "cls": type(tok).__name__}))
"""


@pytest.mark.vllm
def test_transformers_loads_it_as_vllm_does(qwen_folder: Path, vllm_python: str) -> None:
    """vLLM's transformers (5.x) rebuilds a qwen2 tokenizer from vocab + merges: check that."""
    out = subprocess.run(
        [vllm_python, "-c", CHECK_WITH_TRANSFORMERS, str(qwen_folder), SENTENCE],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["len"] == 151936
    assert res["round_trip"] == SENTENCE
    assert res["chat"] == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello there.<|im_end|>\n<|im_start|>assistant\n"
    )
    cfg = json.loads((qwen_folder / "config.json").read_text())
    assert res["eos"] == cfg["eos_token_id"]
