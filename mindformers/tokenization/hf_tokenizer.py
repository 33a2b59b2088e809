"""Tokenizers over the Hugging Face `tokenizers` library (tokenizer.json; byte-level BPE as in Qwen2/Llama 3).

Behaviour follows transformers' PreTrainedTokenizerFast for the same files: the tokenizer.json post-processor
decides which special tokens `encode` adds, special-token strings in the text map to their ids through the
library's added tokens, and `decode(skip_special_tokens=True)` drops exactly the added tokens marked special.
"""
import hashlib
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from mindformers.tools.register import MindFormerModuleType, MindFormerRegister
from ..tools.paths import resolve_repo_path
from ..tools.textfile import read_json, read_text
from .base import _CLEANUP, PreTrainedTokenizerBase

# Qwen2's pre-tokenizer split (contractions, letter runs, single digits, punctuation runs, newlines, spaces).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Llama 3's: like Qwen2's but numbers in groups of up to three digits.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level_bpe(vocab: Dict[str, int], merges: List[Tuple[str, str]], split_pattern: Optional[str],
                   ignore_merges: bool = False, split_digits: bool = False) -> Tokenizer:
    """A byte-level BPE `tokenizers.Tokenizer`; `split_pattern` None means GPT-2's own regex split.

    `ignore_merges`: a pre-token that is itself in the vocabulary is one token, merges unapplied (Llama 3);
    `split_digits`: every digit is its own pre-token before GPT-2's split (SmolLM, StarCoder)."""
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    if split_pattern is None:
        gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), gpt2]) \
            if split_digits else gpt2
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split_pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    return tok


def _template_ends(post_processor: Optional[dict]) -> Tuple[List[int], List[int]]:
    """(ids before, ids after) the text that a serialized post-processor adds to a single sequence."""
    if not post_processor:
        return [], []
    kind = post_processor.get("type")
    if kind == "Sequence":
        before, after = [], []
        for step in post_processor["processors"]:
            b, a = _template_ends(step)
            before, after = b + before, after + a
        return before, after
    if kind == "TemplateProcessing":
        before, after, seen_text = [], [], False
        for item in post_processor["single"]:
            if "Sequence" in item:
                seen_text = True
            else:
                ids = post_processor["special_tokens"][item["SpecialToken"]["id"]]["ids"]
                (after if seen_text else before).extend(ids)
        return before, after
    if kind in ("BertProcessing", "RobertaProcessing"):
        return [post_processor["cls"][1]], [post_processor["sep"][1]]
    return [], []   # ByteLevel and others only change offsets


@MindFormerRegister.register(MindFormerModuleType.TOKENIZER)
class PreTrainedTokenizerFast(PreTrainedTokenizerBase):
    """Tokenizer over a `tokenizers` tokenizer.json (`tokenizer_file`), or a ready `tokenizers.Tokenizer`.

    Named special tokens that are not yet added tokens become special added tokens (new ids if the vocabulary
    lacks them), as transformers does.
    `add_bos_token`/`add_eos_token` None keep the tokenizer.json post-processor; True/False replace it with
    bos/eos around the text. `vocab_size` counts the added tokens too (transformers' `len(tokenizer)`).
    """
    batch_encode_releases_gil = True

    def __init__(self, tokenizer_file: Optional[str] = None, tokenizer_object: Optional[Tokenizer] = None,
                 unk_token: Optional[str] = None, bos_token: Optional[str] = None,
                 eos_token: Optional[str] = None, pad_token: Optional[str] = None,
                 additional_special_tokens: Optional[Sequence[str]] = None, add_bos_token: Optional[bool] = None,
                 add_eos_token: Optional[bool] = None, padding_side: str = "right", truncation_side: str = "right",
                 model_max_length: Optional[int] = None, clean_up_tokenization_spaces: bool = False,
                 chat_template: Optional[str] = None):
        name = type(self).__name__
        if tokenizer_object is not None:
            self._tokenizer = Tokenizer.from_str(tokenizer_object.to_str())   # a copy: we change its settings
        elif tokenizer_file is not None:
            self.tokenizer_file = resolve_repo_path(tokenizer_file, f"{name} tokenizer_file")
            try:
                self._tokenizer = Tokenizer.from_file(self.tokenizer_file)
            except Exception as err:   # the Rust side raises a bare Exception for unparsable files
                raise ValueError(f"{name} tokenizer_file {self.tokenizer_file} is not a readable tokenizers "
                                 f"tokenizer.json ({str(err).splitlines()[0][:200]})") from None
        else:
            raise ValueError(f"{name} needs tokenizer_file (a tokenizer.json)")
        # padding and truncation are ours (base class), per call, not state left in the backend
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        specials = [t for t in (unk_token, bos_token, eos_token, pad_token) if t is not None]
        specials += list(additional_special_tokens or [])
        # special tokens must be added tokens, so that the text around them is split off (ids are kept for
        # those already in the vocabulary, e.g. the chat tokens of a vocab.json)
        known = {t.content for t in self._tokenizer.get_added_tokens_decoder().values()}
        missing = [t for t in dict.fromkeys(specials) if t not in known]
        if missing:
            self._tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
        self.additional_special_tokens = list(additional_special_tokens or [])
        self.chat_template = chat_template
        super().__init__(unk_token=unk_token, bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
                         add_bos_token=False, add_eos_token=False, padding_side=padding_side,
                         truncation_side=truncation_side, model_max_length=model_max_length,
                         clean_up_tokenization_spaces=clean_up_tokenization_spaces)
        if add_bos_token is not None or add_eos_token is not None:
            self._set_bos_eos(bool(add_bos_token), bool(add_eos_token))
        self._refresh_special_layout()

    def _set_bos_eos(self, add_bos: bool, add_eos: bool) -> None:
        """Replace the post-processor by bos/eos around the text (transformers' update_post_processor)."""
        for flag, key in ((add_bos, "bos_token"), (add_eos, "eos_token")):
            if flag and getattr(self, key) is None:
                raise ValueError(f"{type(self).__name__} add_{key}=True needs {key} to be set")
        single = " ".join(([f"{self.bos_token}:0"] if add_bos else []) + ["$A:0"] +
                          ([f"{self.eos_token}:0"] if add_eos else []))
        pair = single + " " + " ".join(([f"{self.bos_token}:1"] if add_bos else []) + ["$B:1"] +
                                       ([f"{self.eos_token}:1"] if add_eos else []))
        tokens = [(t, self._special_ids[t]) for t, on in ((self.bos_token, add_bos), (self.eos_token, add_eos)) if on]
        self._tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                                       special_tokens=tokens)

    def _refresh_special_layout(self) -> None:
        post = json.loads(self._tokenizer.to_str()).get("post_processor")
        self._prefix_ids, self._suffix_ids = _template_ends(post)
        self.add_bos_token = self.bos_token is not None and self.bos_token_id in self._prefix_ids
        self.add_eos_token = self.eos_token is not None and self.eos_token_id in self._suffix_ids
        added = self._tokenizer.get_added_tokens_decoder()
        self._all_special = sorted(set(self._special_ids.values()) |
                                   {i for i, t in added.items() if t.special})

    # --- the backend -----------------------------------------------------------------------------------
    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The `tokenizers.Tokenizer` underneath."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def all_special_ids(self) -> List[int]:
        return list(self._all_special)

    def get_vocab(self) -> Dict[str, int]:
        """Token -> id, added tokens included."""
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def _encode(self, texts: List[str], add_special_tokens: bool):
        # the ids only: encode_batch_fast skips the character offsets (same ids, ~25% faster with 2 threads)
        fast = getattr(self._tokenizer, "encode_batch_fast", None)
        return (fast or self._tokenizer.encode_batch)(texts, add_special_tokens=add_special_tokens)

    def _encode_plain(self, texts: List[str]) -> List[List[int]]:
        return [e.ids for e in self._encode(texts, add_special_tokens=False)] if texts else []

    def _decode_plain(self, ids: List[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def _token_to_id(self, token: str) -> Optional[int]:
        return self._tokenizer.token_to_id(token)

    def _id_to_token(self, index: int) -> str:
        return self._tokenizer.id_to_token(index)

    def num_special_tokens_to_add(self) -> int:
        return len(self._prefix_ids) + len(self._suffix_ids)

    def build_inputs_with_special_tokens(self, token_ids: List[int]) -> List[int]:
        return self._prefix_ids + list(token_ids) + self._suffix_ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> List[List[int]]:
        # the library splits out added tokens itself (honouring their lstrip/rstrip/single_word settings)
        texts = list(texts)
        if not texts:
            return []
        return [e.ids for e in self._encode(texts, add_special_tokens=add_special_tokens)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        text = self._tokenizer.decode(self._checked_ids(ids), skip_special_tokens=skip_special_tokens)
        # transformers skips the word-level clean-up for BPE models: it would delete real spaces
        if self.clean_up_tokenization_spaces and not isinstance(self._tokenizer.model, models.BPE):
            text = _clean_up(text)
        return text

    def batch_decode(self, sequences: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> List[str]:
        return [self.decode(s, skip_special_tokens) for s in sequences]

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self._tokenizer.to_str().encode("utf-8"))
        digest.update(repr((type(self).__name__, self.unk_token, self.bos_token, self.eos_token, self.pad_token,
                            self.additional_special_tokens)).encode("utf-8"))
        return digest.hexdigest()

    # --- chat ------------------------------------------------------------------------------------------
    def apply_chat_template(self, conversation: List[Dict[str, str]], chat_template: Optional[str] = None,
                            add_generation_prompt: bool = False, tokenize: bool = True, **extra: Any):
        """The conversation rendered with `chat_template` (default: tokenizer_config.json's); ids if `tokenize`.

        Defaults follow transformers (tokenize=True, add_generation_prompt=False); the rendered text already
        holds its special tokens, so it is encoded without the post-processor's bos/eos.
        """
        from .chat_template import apply_chat_template
        if chat_template is None and self.chat_template is None:
            raise ValueError(f"{type(self).__name__} has no chat_template: set chat_template in "
                             f"tokenizer_config.json or pass chat_template=")
        text = apply_chat_template(conversation, tokenizer=self, chat_template=chat_template or self.chat_template,
                                   add_generation_prompt=add_generation_prompt, **extra)
        return self.encode(text, add_special_tokens=False) if tokenize else text


def _clean_up(text: str) -> str:
    for before, after in _CLEANUP:
        text = text.replace(before, after)
    return text


@MindFormerRegister.register(MindFormerModuleType.TOKENIZER)
class Qwen2Tokenizer(PreTrainedTokenizerFast):
    """Qwen2/Qwen3 tokenizer (upstream YAML name): tokenizer.json, or vocab.json + merges.txt with Qwen2's split.

    Defaults are Qwen2's: no bos and no unk, eos and pad `<|endoftext|>`; the chat tokens are special.
    """

    CHAT_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

    def __init__(self, vocab_file: Optional[str] = None, merges_file: Optional[str] = None,
                 tokenizer_file: Optional[str] = None, unk_token: Optional[str] = None,
                 bos_token: Optional[str] = None, eos_token: Optional[str] = "<|endoftext|>",
                 pad_token: Optional[str] = "<|endoftext|>",
                 additional_special_tokens: Optional[Sequence[str]] = None, **kwargs):
        tokenizer_object = None
        if tokenizer_file is None:
            if vocab_file is None or merges_file is None:
                raise ValueError("Qwen2Tokenizer needs tokenizer_file (tokenizer.json) or both vocab_file "
                                 "(vocab.json) and merges_file (merges.txt)")
            tokenizer_object = byte_level_bpe(_read_vocab(vocab_file), _read_merges(merges_file), QWEN2_SPLIT)
            extra = [t for t in self.CHAT_TOKENS if t not in (additional_special_tokens or [])]
            additional_special_tokens = list(additional_special_tokens or []) + extra
        super().__init__(tokenizer_file=tokenizer_file, tokenizer_object=tokenizer_object, unk_token=unk_token,
                         bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
                         additional_special_tokens=additional_special_tokens, **kwargs)


def _read_vocab(path: str) -> Dict[str, int]:
    path = resolve_repo_path(path, "Qwen2Tokenizer vocab_file")
    vocab = read_json(path)
    if not isinstance(vocab, dict):
        raise ValueError(f"Qwen2Tokenizer vocab_file {path} must be a JSON object token -> id")
    return vocab


def _read_merges(path: str) -> List[Tuple[str, str]]:
    path = resolve_repo_path(path, "Qwen2Tokenizer merges_file")
    merges = []
    for number, line in enumerate(read_text(path).split("\n"), 1):
        line = line.rstrip("\r")
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"Qwen2Tokenizer merges_file {path} line {number}: expected two tokens "
                             f"separated by one space, got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges
