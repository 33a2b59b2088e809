"""The tokenizer inside a GGUF file: a "gpt2" (byte-level BPE) or "llama" (sentencepiece) vocabulary rebuilds the
tokenizer it came from."""
import json
import os

import numpy as np
import pytest

from mindformers.models.hf import tokenizer_from_hf
from mindformers.tokenization import AutoTokenizer, LlamaTokenizer, PreTrainedTokenizerFast
from mindformers.tools.paths import REPO_ROOT

gguf = pytest.importorskip("gguf")
spm = pytest.importorskip("sentencepiece")

BPE_DIR = os.path.join(REPO_ROOT, "tests", "fixtures", "hf_tiny_bpe_tokenizer")
SPM_MODEL = os.path.join(REPO_ROOT, "mindformers", "assets", "tiny_corpus", "tokenizer.model")
TEXTS = ["", "Return the value of the file object.", "  spaces   and\ttabs\n\n", "naïve 日本語 ✓ 12345 it's",
         "<|im_start|>user\nhi<|im_end|>\n", "<think>a step</think> done"]


def _fixture_spec():
    with open(os.path.join(BPE_DIR, "tokenizer.json"), encoding="utf-8") as f:
        return json.load(f)


def _write(path, model="gpt2", pre="qwen2", add_bos=True, spec=None):
    """A GGUF file holding the BPE fixture's vocabulary (or `spec`'s, a tokenizer.json dict) the way llama.cpp's
    converter writes it."""
    spec = spec or _fixture_spec()
    vocab = dict(spec["model"]["vocab"])
    vocab.update({t["content"]: t["id"] for t in spec["added_tokens"]})
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]
    kinds = {t["content"]: 3 if t["special"] else 4 for t in spec["added_tokens"]}   # control / user-defined
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_tokenizer_model(model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([kinds.get(t, 1) for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    writer.add_bos_token_id(vocab["<|begin_of_text|>"])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_pad_token_id(vocab["<|endoftext|>"])
    writer.add_add_bos_token(add_bos)
    writer.add_chat_template("{{ messages[0]['content'] }}")
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def test_gpt2_vocabulary_matches_the_tokenizer_json(tmp_path):
    path = _write(tmp_path / "m.gguf")
    tok = tokenizer_from_hf(path)
    reference = AutoTokenizer.from_pretrained(BPE_DIR)
    assert type(tok) is PreTrainedTokenizerFast and len(tok) == len(reference)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|begin_of_text|>", "<|im_end|>", "<|endoftext|>")
    assert tok.encode_batch(TEXTS) == reference.encode_batch(TEXTS)
    for ids in reference.encode_batch(TEXTS):
        assert tok.decode(ids, skip_special_tokens=False) == reference.decode(ids, skip_special_tokens=False)
        assert tok.decode(ids) == reference.decode(ids)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "hi"
    # add_bos_token false (llama.cpp's default for gpt2 vocabularies): nothing is added
    plain = tokenizer_from_hf(_write(tmp_path / "n.gguf", add_bos=False))
    assert plain.encode_batch(TEXTS) == reference.encode_batch(TEXTS, add_special_tokens=False)


def test_unsupported_kinds_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="tokenizer.ggml.model 'bert' is not supported; supported: gpt2, llama"):
        tokenizer_from_hf(_write(tmp_path / "a.gguf", model="bert"))
    with pytest.raises(ValueError, match="tokenizer.ggml.pre 'made-up' is not supported; supported: qwen2"):
        tokenizer_from_hf(_write(tmp_path / "b.gguf", pre="made-up"))



# tokenizer.ggml.pre names llama.cpp writes, as the tokenizer.json pre-tokenizers they stand for
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_SMOLLM2 = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]}
_LLAMA3 = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "behavior": "Isolated", "invert": False, "pattern": {"Regex": (
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
        "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")}},
    {**_BYTE_LEVEL, "use_regex": False}]}
PRE_TEXTS = TEXTS[:5] + ["Hello SmolLM2 has 135M parameters and 30 layers (2024-11-01)", "x=12345678; y=-0.5e10, 1212"]


@pytest.mark.parametrize("pre, pre_tokenizer, ignore_merges", [
    ("smollm", _SMOLLM2, False), ("starcoder", _SMOLLM2, False), ("gpt-2", _BYTE_LEVEL, False),
    ("phi-2", _BYTE_LEVEL, False), ("llama-bpe", _LLAMA3, True), ("llama-v3", _LLAMA3, True),
    ("deepseek-r1-qwen", None, False)])
def test_llama_cpp_pre_tokenizer_names_load(tmp_path, pre, pre_tokenizer, ignore_merges):
    spec = _fixture_spec()
    # tokens that tell the splits apart: numbers merge to "12"/"123" unless digits are split one by one, and
    # " SmolLM" is a word of the vocabulary that no merge makes (one token only with ignore_merges)
    first = len(spec["model"]["vocab"])  # ids stay dense: the added tokens after the vocabulary make way
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < first]
    spec["model"]["vocab"].update({t: first + i for i, t in enumerate(("12", "123", "\u0120SmolLM"))})
    spec["model"]["merges"] += [["1", "2"], ["12", "3"]]
    spec["pre_tokenizer"] = pre_tokenizer or spec["pre_tokenizer"]  # None: the fixture's own (Qwen2's)
    spec["model"]["ignore_merges"] = ignore_merges
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    (ref_dir / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    (ref_dir / "tokenizer_config.json").write_bytes(open(os.path.join(BPE_DIR, "tokenizer_config.json"), "rb").read())
    reference = AutoTokenizer.from_pretrained(str(ref_dir))
    tok = tokenizer_from_hf(_write(tmp_path / "m.gguf", pre=pre, spec=spec))
    assert tok.encode_batch(PRE_TEXTS) == reference.encode_batch(PRE_TEXTS)
    for ids in reference.encode_batch(PRE_TEXTS):
        assert tok.decode(ids) == reference.decode(ids)


def _write_words(path, pre, bos=True):
    """A byte-level vocabulary holding "abc" that no merge makes (merges: only "a b")."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(["<s>", "a", "b", "c", "ab", "abc"])
    writer.add_token_types([3, 1, 1, 1, 1, 1])
    writer.add_token_merges(["a b"])
    if bos:
        writer.add_bos_token_id(0)
    writer.add_tensor("token_embd.weight", np.zeros((6, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def test_llama_bpe_vocabularies_ignore_merges_and_add_bos_as_llama_cpp_does(tmp_path):
    # llama.cpp's llama3 pre-tokenizers: a word that is itself in the vocabulary is one token, and bos is added
    # unless tokenizer.ggml.add_bos_token says otherwise
    for pre in ("llama-bpe", "llama3"):
        assert tokenizer_from_hf(_write_words(tmp_path / f"{pre}.gguf", pre)).encode("abc") == [0, 5]
    # the gpt2 ones apply the merges ("ab" + "c") and add nothing
    assert tokenizer_from_hf(_write_words(tmp_path / "gpt-2.gguf", "gpt-2")).encode("abc") == [4, 3]
    with pytest.raises(ValueError, match="add_bos_token is true but tokenizer.ggml.bos_token_id is missing"):
        tokenizer_from_hf(_write_words(tmp_path / "no_bos.gguf", "llama-bpe", bos=False))

# sentencepiece-style ("llama") vocabularies -----------------------------------------------------------------
# unicode, pieces missing from the tiny vocabulary (byte fallback: emoji, CJK), odd spacing, special tokens
SPM_TEXTS = ["", " ", "\n", "Hello world", "  leading and trailing  ", "multiple   spaces\tand\ttabs",
             "line one\nline two\n\n", "naïve café 日本語 ✓ 12345 it's", "emoji 😀🦙 and ﬁ ligature",
             "<s>inside</s> text <unk> here", "</s>", "a<s>b", "Return the value of the file object."]


def _write_spm(path, model="llama", types=None, ids=True, extra=None, padding=0):
    """A GGUF file holding the shipped sentencepiece vocabulary as llama.cpp's converter writes it: pieces,
    scores and types from the processor, `padding` "[PAD<i>]" unused tokens up to the model's vocab_size.

    `types(list)` edits the token types; `ids=False` leaves out the special-token ids and add_* flags;
    `extra(writer)` adds further keys."""
    sp = spm.SentencePieceProcessor(model_file=SPM_MODEL)
    tokens, scores, kinds = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        kind = gguf.TokenType.NORMAL
        for check, value in ((sp.is_unknown, gguf.TokenType.UNKNOWN), (sp.is_control, gguf.TokenType.CONTROL),
                             (sp.is_unused, gguf.TokenType.UNUSED), (sp.is_byte, gguf.TokenType.BYTE)):
            kind = value if check(i) else kind
        kinds.append(int(kind))
    for i in range(len(tokens), len(tokens) + padding):
        tokens.append(f"[PAD{i}]")
        scores.append(-10000.0)
        kinds.append(int(gguf.TokenType.UNUSED))
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model(model)
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types(kinds) if types else kinds)
    if ids:
        writer.add_bos_token_id(sp.bos_id())
        writer.add_eos_token_id(sp.eos_id())
        writer.add_unk_token_id(sp.unk_id())
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
    if extra is not None:
        extra(writer)
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def _assert_same_tokenizer(tok, reference, texts=SPM_TEXTS):
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id) == \
        (reference.bos_token_id, reference.eos_token_id, reference.unk_token_id, reference.pad_token_id)
    for add_special_tokens in (True, False):
        assert tok.encode_batch(texts, add_special_tokens) == reference.encode_batch(texts, add_special_tokens)
    for ids in reference.encode_batch(texts):
        for skip in (True, False):
            assert tok.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)


def test_llama_vocabulary_matches_the_sentencepiece_model(tmp_path):
    path = _write_spm(tmp_path / "m.gguf", extra=lambda w: w.add_chat_template("{{ messages[0]['content'] }}"))
    reference = LlamaTokenizer(vocab_file=SPM_MODEL)
    for tok in (tokenizer_from_hf(path), AutoTokenizer.from_pretrained(path)):
        assert type(tok) is LlamaTokenizer and tok.vocab_file == path
        assert tok.get_vocab() == reference.get_vocab()
        assert tok.sp_model.encode(SPM_TEXTS, out_type=str) == reference.sp_model.encode(SPM_TEXTS, out_type=str)
        _assert_same_tokenizer(tok, reference)
        assert tok.chat_template == "{{ messages[0]['content'] }}"
    tok = tokenizer_from_hf(path)
    # byte fallback reaches the bytes of characters the vocabulary lacks, and decodes back to them
    assert any(t.startswith("<0x") for t in tok.tokenize("🦙"))
    for text in SPM_TEXTS[1:9]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.fingerprint() == tokenizer_from_hf(path).fingerprint()   # a stable cache key across loads


def test_llama_vocabulary_flags_defaults_and_converter_variants(tmp_path):
    reference = LlamaTokenizer(vocab_file=SPM_MODEL)
    # llama.cpp's defaults with no ids or flags: bos 1, eos 2, unk 0, add_bos_token true, add_eos_token false
    _assert_same_tokenizer(tokenizer_from_hf(_write_spm(tmp_path / "a.gguf", ids=False)), reference)
    flags = tokenizer_from_hf(_write_spm(tmp_path / "b.gguf", ids=False, extra=lambda w: (
        w.add_add_bos_token(False), w.add_add_eos_token(True), w.add_pad_token_id(2))))
    assert flags.pad_token == "</s>"
    assert flags.encode_batch(SPM_TEXTS) == [ids + [2] for ids in reference.encode_batch(SPM_TEXTS, False)]
    # the converter pads to the model's vocab_size with unused "[PAD<i>]" tokens; they are never produced
    padded = tokenizer_from_hf(_write_spm(tmp_path / "c.gguf", padding=3))
    assert len(padded) == len(reference) + 3 and padded.convert_ids_to_tokens(len(reference)) == "[PAD2048]"
    _assert_same_tokenizer(padded, reference, SPM_TEXTS + ["[PAD2048]"])
    # a vocabulary converted from tokenizer.json marks <unk> a control token: unknown_token_id names it
    as_control = tokenizer_from_hf(_write_spm(tmp_path / "d.gguf", types=lambda k: [3 if t == 2 else t for t in k]))
    _assert_same_tokenizer(as_control, reference)
    # add_space_prefix false: no leading "\u2581" (llama.cpp reads this key for sentencepiece vocabularies)
    bare = tokenizer_from_hf(_write_spm(tmp_path / "e.gguf", extra=lambda w: w.add_add_space_prefix(False)))
    assert bare.tokenize("Hello") != reference.tokenize("Hello")
    assert not bare.tokenize("Hello")[0].startswith("\u2581")


def test_bad_llama_vocabularies_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="token_type marks 2 tokens unknown"):
        tokenizer_from_hf(_write_spm(tmp_path / "a.gguf", types=lambda k: [2, 2] + k[2:]))
    with pytest.raises(ValueError, match="tokenizer.ggml.token_type has 3 entries for 2048 tokens"):
        tokenizer_from_hf(_write_spm(tmp_path / "b.gguf", types=lambda k: k[:3]))
    with pytest.raises(ValueError, match="do not make a sentencepiece vocabulary .*byte piece"):
        tokenizer_from_hf(_write_spm(tmp_path / "c.gguf", types=lambda k: k[:300] + [6] + k[301:]))
    # T5's unigram sentencepiece vocabularies are another kind
    with pytest.raises(ValueError, match="tokenizer.ggml.model 't5' is not supported; supported: gpt2, llama"):
        tokenizer_from_hf(_write_spm(tmp_path / "d.gguf", model="t5"))
