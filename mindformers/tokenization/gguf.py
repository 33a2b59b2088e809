"""The tokenizer stored in a GGUF file's tokenizer.ggml.* metadata (byte-level BPE or sentencepiece)."""
import re
from typing import Any, Dict, List, NamedTuple, Optional


class _PreTokenizer(NamedTuple):
    """How llama.cpp splits text before byte-level BPE for a tokenizer.ggml.pre name (src/llama-vocab.cpp)."""
    split: Optional[str]   # the hf_tokenizer regex constant; None: GPT-2's own split
    digits: bool = False   # every digit its own piece first (llama.cpp's SMOLLM/STARCODER regexes)
    llama3: bool = False   # ignore_merges (a word in the vocabulary is one token) and bos added by default


_QWEN2, _LLAMA3 = _PreTokenizer("QWEN2_SPLIT"), _PreTokenizer("LLAMA3_SPLIT", llama3=True)
_GPT2, _GPT2_DIGITS = _PreTokenizer(None), _PreTokenizer(None, digits=True)
# tokenizer.ggml.pre -> its pre-tokenizer: the names llama.cpp maps to its qwen2, llama3 (llama-bpe), gpt2 and
# smollm pre-tokenizer types ("gpt2" and "default" as this reader always took them)
_GGUF_PRE_SPLITS = {
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "megrez"), _QWEN2),
    **dict.fromkeys(("llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"),
                    _LLAMA3),
    **dict.fromkeys(("gpt-2", "gpt2", "default", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es",
                     "jina-v2-de", "a.x-4.0", "mellum", "exaone4", "mpt", "olmo", "jais", "trillion"), _GPT2),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"),
                    _GPT2_DIGITS),
}
# llama.cpp token types (gguf.TokenType); sentencepiece's ModelProto uses the same numbers
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def gguf_module():
    """The `gguf` package (an optional dependency), or a one-line error saying how to install it."""
    try:
        import gguf
    except ImportError:
        raise ImportError("reading GGUF files needs the gguf package: pip install gguf "
                          "(or pip install 'mindformers[gguf]')") from None
    return gguf


def _gguf_tokenizer_fields(path: str) -> Dict[str, Any]:
    reader = gguf_module().GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items() if name.startswith("tokenizer.")}


def tokenizer_from_gguf(path: str, **kwargs: Any):
    """The tokenizer in a GGUF file's tokenizer.ggml.* metadata: "gpt2" (byte-level BPE) becomes a
    PreTrainedTokenizerFast, "llama" (sentencepiece) a LlamaTokenizer."""
    meta = _gguf_tokenizer_fields(path)
    kind = meta.get("tokenizer.ggml.model")
    if kind == "gpt2":
        return _byte_level_bpe_from_gguf(path, meta, kwargs)
    if kind == "llama":
        return _sentencepiece_from_gguf(path, meta, kwargs)
    raise ValueError(f"{path}: GGUF tokenizer.ggml.model {kind!r} is not supported; supported: gpt2, llama. "
                     f"Set processor.tokenizer in the YAML (e.g. the original model's tokenizer files)")


def _tokens(path: str, meta: Dict[str, Any]) -> List[str]:
    tokens: List[str] = list(meta.get("tokenizer.ggml.tokens") or [])
    if not tokens:
        raise ValueError(f"{path}: GGUF tokenizer.ggml.tokens is missing or empty")
    return tokens


def _special_tokens(path: str, meta: Dict[str, Any], tokens: List[str],
                    defaults: Dict[str, int]) -> Dict[str, Any]:
    """bos/eos/pad/unk token strings from the *_token_id keys (else `defaults`), and add_bos/add_eos."""
    def named(key):
        index = meta.get(f"tokenizer.ggml.{key}_token_id", defaults.get(key))
        return tokens[int(index)] if index is not None and 0 <= int(index) < len(tokens) else None

    options = {"bos_token": named("bos"), "eos_token": named("eos"), "pad_token": named("padding"),
               "unk_token": named("unknown"),
               "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", defaults.get("add_bos", False))),
               "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False))}
    if options["add_bos_token"] and options["bos_token"] is None:
        raise ValueError(f"{path}: GGUF tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id "
                         f"is missing")
    return options


def _byte_level_bpe_from_gguf(path: str, meta: Dict[str, Any], kwargs: Dict[str, Any]):
    """A PreTrainedTokenizerFast from a "gpt2" vocabulary and its merges.

    Control tokens become special added tokens and user-defined ones plain added tokens; bos/eos are added
    as tokenizer.ggml.add_bos_token/add_eos_token say (llama.cpp's default: bos for the llama3 pre-tokenizers,
    else neither).
    """
    from tokenizers import AddedToken

    from . import hf_tokenizer
    pre = str(meta.get("tokenizer.ggml.pre", "default"))
    if pre not in _GGUF_PRE_SPLITS:
        raise ValueError(f"{path}: GGUF tokenizer.ggml.pre {pre!r} is not supported; supported: "
                         f"{', '.join(_GGUF_PRE_SPLITS)}")
    tokens = _tokens(path, meta)
    types = list(meta.get("tokenizer.ggml.token_type") or [_NORMAL] * len(tokens))
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    rule = _GGUF_PRE_SPLITS[pre]
    backend = hf_tokenizer.byte_level_bpe({t: i for i, t in enumerate(tokens)}, merges,
                                          None if rule.split is None else getattr(hf_tokenizer, rule.split),
                                          ignore_merges=rule.llama3, split_digits=rule.digits)
    # added tokens keep their ids (they are already in the vocabulary)
    backend.add_tokens([AddedToken(tokens[i], special=types[i] == _CONTROL, normalized=False)
                        for i in range(len(tokens)) if types[i] in (_CONTROL, _USER_DEFINED)])
    options = _special_tokens(path, meta, tokens, {"add_bos": rule.llama3})
    options["chat_template"] = meta.get("tokenizer.chat_template")
    options.update(kwargs)
    return hf_tokenizer.PreTrainedTokenizerFast(tokenizer_object=backend, **options)


def _sentencepiece_from_gguf(path: str, meta: Dict[str, Any], kwargs: Dict[str, Any]):
    """A LlamaTokenizer over the sentencepiece model a "llama" vocabulary was converted from.

    Defaults follow llama.cpp's for this kind: bos 1, eos 2, unk 0, add_bos_token true; with no padding id the
    pad token is the unk token (LlamaTokenizer's own default).
    """
    from .llama_tokenizer import LlamaTokenizer
    tokens = _tokens(path, meta)
    options = _special_tokens(path, meta, tokens, {"bos": 1, "eos": 2, "unknown": 0, "add_bos": True})
    model = _sentencepiece_model(path, meta, tokens)
    # sentencepiece's unk piece is what unknown text becomes, so it is the unk token whatever the id key says
    options["unk_token"] = next(p.piece for p in model.pieces if p.type == _UNKNOWN)
    options["pad_token"] = options["pad_token"] or options["unk_token"]
    template = meta.get("tokenizer.chat_template")
    options.update(kwargs)
    template = options.pop("chat_template", template)
    tokenizer = LlamaTokenizer(vocab_file=path, model_bytes=model.SerializeToString(), **options)
    tokenizer.chat_template = template
    return tokenizer


def _sentencepiece_model(path: str, meta: Dict[str, Any], tokens: List[str]):
    """The sentencepiece ModelProto of a "llama" vocabulary: a BPE model that merges by piece score (what
    llama.cpp's SPM tokenizer does), with byte fallback when all 256 byte pieces exist."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as sp_pb
    count = len(tokens)
    scores = list(meta.get("tokenizer.ggml.scores") or [0.0] * count)
    types = list(meta.get("tokenizer.ggml.token_type") or
                 [_BYTE if _BYTE_PIECE.fullmatch(t) else _NORMAL for t in tokens])
    for key, values in (("scores", scores), ("token_type", types)):
        if len(values) != count:
            raise ValueError(f"{path}: GGUF tokenizer.ggml.{key} has {len(values)} entries for {count} tokens")
    # undefined types (0, 7...) tokenize as normal pieces in llama.cpp
    types = [int(t) if _NORMAL <= int(t) <= _BYTE else _NORMAL for t in types]
    unknowns = [i for i, t in enumerate(types) if t == _UNKNOWN]
    if len(unknowns) > 1:
        raise ValueError(f"{path}: GGUF tokenizer.ggml.token_type marks {len(unknowns)} tokens unknown (ids "
                         f"{unknowns[:4]}); a sentencepiece vocabulary has exactly one")
    if not unknowns:   # converters from tokenizer.json mark <unk> a control token; sentencepiece needs one
        unk = int(meta.get("tokenizer.ggml.unknown_token_id", 0))
        if not 0 <= unk < count:
            raise ValueError(f"{path}: GGUF vocabulary has no unknown token (token_type 2) and "
                             f"tokenizer.ggml.unknown_token_id {unk} is out of range [0, {count})")
        types[unk] = _UNKNOWN
    model = sp_pb.ModelProto()
    model.trainer_spec.model_type = sp_pb.TrainerSpec.BPE
    model.trainer_spec.vocab_size = count
    model.trainer_spec.byte_fallback = len({t for t, k in zip(tokens, types) if k == _BYTE}) == 256
    # Llama's sentencepiece normalizer: no NFKC, spaces as "\u2581", a leading space added, runs of spaces kept
    spec = model.normalizer_spec
    spec.name, spec.escape_whitespaces = "identity", True
    spec.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    spec.remove_extra_whitespaces = bool(meta.get("tokenizer.ggml.remove_extra_whitespaces", False))
    for i, (piece, score, kind) in enumerate(zip(tokens, scores, types)):
        # llama.cpp's name for an empty token; sentencepiece rejects empty pieces
        model.pieces.add(piece=piece or f"[EMPTY_{i}]", score=float(score), type=kind)
    try:   # sentencepiece's own check names the bad piece (duplicates, malformed byte pieces)
        spm.SentencePieceProcessor().LoadFromSerializedProto(model.SerializeToString())
    except RuntimeError as err:
        raise ValueError(f"{path}: GGUF tokenizer.ggml.tokens/token_type do not make a sentencepiece "
                         f"vocabulary ({err})") from None
    return model
