"""AutoTokenizer: backend choice per directory, tokenizer_config.json handling, errors; Qwen2Tokenizer; predict."""
import copy
import json
import os
import pickle
import shutil

import pytest

import mindformers
from mindformers.models.hf import tokenizer_from_hf
from mindformers.tokenization import AutoTokenizer, LlamaTokenizer, PreTrainedTokenizerFast, Qwen2Tokenizer
from mindformers.tools.paths import REPO_ROOT
from mindformers.tools.register import MindFormerModuleType, build_from_config

BPE_DIR = os.path.join(REPO_ROOT, "tests", "fixtures", "hf_tiny_bpe_tokenizer")
LLAMA_DIR = os.path.join(REPO_ROOT, "tests", "fixtures", "hf_tiny_llama")
TEXTS = ["Return the value of the file object.", "<|im_start|>user\nhi<|im_end|>", "naïve 日本語 12345"]


@pytest.fixture(scope="module")
def bpe():
    return AutoTokenizer.from_pretrained(BPE_DIR)


def test_backend_follows_the_files(bpe):
    assert mindformers.AutoTokenizer is AutoTokenizer
    assert type(bpe) is PreTrainedTokenizerFast and bpe.chat_template.startswith("{% for message")
    assert (bpe.bos_token, bpe.eos_token, bpe.pad_token, bpe.unk_token) == \
        ("<|begin_of_text|>", "<|im_end|>", "<|endoftext|>", None)
    assert bpe.add_bos_token and not bpe.add_eos_token and bpe.model_max_length == 64
    sp = AutoTokenizer.from_pretrained(LLAMA_DIR)
    assert type(sp) is LlamaTokenizer and sp.vocab_size == 2048
    assert type(tokenizer_from_hf(BPE_DIR)) is PreTrainedTokenizerFast


def test_special_and_added_tokens(bpe):
    ids = bpe.encode("<|im_start|>x<think>y</think><|im_end|>", add_special_tokens=False)
    assert ids[0] == bpe.convert_tokens_to_ids("<|im_start|>") and ids[-1] == bpe.eos_token_id
    # <think> is an added token but not a special one: skip_special_tokens keeps it
    assert bpe.decode(ids) == "x<think>y</think>"
    assert bpe.decode(ids, skip_special_tokens=False) == "<|im_start|>x<think>y</think><|im_end|>"
    assert set(bpe.all_special_ids) == {0, 1, 2, 3}
    assert bpe.get_vocab()["<think>"] == 800 and len(bpe) == 802
    # a named special token the vocabulary lacks is added, as transformers does
    extra = AutoTokenizer.from_pretrained(BPE_DIR, unk_token="<unk>")
    assert extra.unk_token_id == 802 and extra.encode("a<unk>", add_special_tokens=False)[-1] == 802


def test_add_bos_eos_replace_the_post_processor():
    tok = AutoTokenizer.from_pretrained(BPE_DIR, add_bos_token=False, add_eos_token=True)
    body = tok.encode("the file", add_special_tokens=False)
    assert tok.encode("the file") == body + [tok.eos_token_id] and tok.num_special_tokens_to_add() == 1
    assert tok("the file the file", max_length=3, truncation=True)["input_ids"] == body[:2] + [tok.eos_token_id]
    with pytest.raises(ValueError, match="add_bos_token=True needs bos_token"):
        AutoTokenizer.from_pretrained(BPE_DIR, bos_token=None, add_bos_token=True)


def test_registry_pickle_and_fingerprint(bpe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    built = build_from_config({"type": "PreTrainedTokenizerFast",
                               "tokenizer_file": "tests/fixtures/hf_tiny_bpe_tokenizer/tokenizer.json",
                               "bos_token": "<|begin_of_text|>", "pad_token": "<|endoftext|>"},
                              MindFormerModuleType.TOKENIZER)
    assert built.encode_batch(TEXTS) == bpe.encode_batch(TEXTS)
    for clone in (pickle.loads(pickle.dumps(bpe)), copy.deepcopy(bpe)):
        assert clone.encode_batch(TEXTS) == bpe.encode_batch(TEXTS) and clone.fingerprint() == bpe.fingerprint()
    assert AutoTokenizer.from_pretrained(BPE_DIR, add_eos_token=True).fingerprint() != bpe.fingerprint()


def _vocab_and_merges(tmp_path):
    with open(os.path.join(BPE_DIR, "tokenizer.json"), encoding="utf-8") as f:
        model = json.load(f)["model"]
    (tmp_path / "vocab.json").write_text(json.dumps(model["vocab"]), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def test_qwen2_tokenizer_from_vocab_and_merges(bpe, tmp_path):
    _vocab_and_merges(tmp_path)
    qwen = build_from_config({"type": "Qwen2Tokenizer", "vocab_file": str(tmp_path / "vocab.json"),
                              "merges_file": str(tmp_path / "merges.txt"), "eos_token": "<|im_end|>"},
                             MindFormerModuleType.TOKENIZER)
    assert qwen.bos_token is None and qwen.pad_token == "<|endoftext|>" and qwen.eos_token_id == 3
    # same pieces as the tokenizer.json, minus its bos post-processor; chat tokens are special
    assert qwen.encode_batch(TEXTS) == bpe.encode_batch(TEXTS, add_special_tokens=False)
    assert qwen.decode(qwen.encode(TEXTS[1])) == "user\nhi"
    # a directory with only vocab.json + merges.txt loads as Qwen2Tokenizer
    assert type(AutoTokenizer.from_pretrained(str(tmp_path))) is Qwen2Tokenizer
    (tmp_path / "merges.txt").write_text("a b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="merges.txt line 1: expected two tokens"):
        Qwen2Tokenizer(vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt"))
    with pytest.raises(ValueError, match="needs tokenizer_file"):
        Qwen2Tokenizer(vocab_file=str(tmp_path / "vocab.json"))


def test_errors_name_the_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} has no tokenizer: looked for tokenizer.json, "
                                                f"tokenizer.model, and vocab.json with merges.txt"):
        AutoTokenizer.from_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="AutoTokenizer path 'no/such/dir' not found"):
        AutoTokenizer.from_pretrained("no/such/dir")
    (tmp_path / "tokenizer.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer.json is not a readable tokenizers tokenizer.json"):
        AutoTokenizer.from_pretrained(str(tmp_path))
    (tmp_path / "tokenizer_config.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer_config.json: not valid JSON"):
        AutoTokenizer.from_pretrained(str(tmp_path))


def test_tokenizer_json_only_directory_predicts(tmp_path, graph_mode):
    """A Hugging Face directory whose tokenizer is only tokenizer.json works as pretrained_model_dir."""
    import mindspore as ms

    from mindformers.config import load_config
    from mindformers.models import LlamaConfig, LlamaForCausalLM
    from mindformers.models.hf import save_pretrained
    from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer

    ms.set_seed(0)
    net = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=802,
                                       intermediate_size=64, seq_length=32))
    model_dir = tmp_path / "hf"
    save_pretrained(net, str(model_dir))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(BPE_DIR, name), model_dir / name)
    config = load_config(os.path.join(REPO_ROOT, "configs/llama/predict_llama_tiny_hf.yaml"),
                         {"pretrained_model_dir": str(model_dir), "output_dir": str(tmp_path / "out"),
                          "model.model_config.seq_length": 32})
    outputs = CausalLanguageModelingTrainer().predict(config, inputs=["Return the"], max_new_tokens=3)
    assert len(outputs) == 1 and isinstance(outputs[0], str)
