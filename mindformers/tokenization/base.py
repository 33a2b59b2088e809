"""Tokenizer base class: special tokens, padding, truncation and batching shared by every backend.

A backend (sentencepiece, HF `tokenizers`, ...) subclasses `PreTrainedTokenizerBase`, loads its model, then
calls `super().__init__` and supplies only plain-text encode/decode and the vocabulary lookups.
"""
import abc
import re
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

TextInput = Union[str, Sequence[str]]
_PADDING = {False: None, "do_not_pad": None, True: "longest", "longest": "longest", "max_length": "max_length"}
# Spaces a word-level tokenizer would leave before punctuation and English contractions.
_CLEANUP = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]


class PreTrainedTokenizerBase(abc.ABC):
    """Special tokens, `__call__` with padding/truncation, and id/token conversions over a backend."""

    # True when encode_batch spends its time outside the GIL, so threads can share one tokenizer in parallel
    batch_encode_releases_gil = False

    def __init__(self, unk_token: Optional[str] = "<unk>", bos_token: Optional[str] = "<s>",
                 eos_token: Optional[str] = "</s>", pad_token: Optional[str] = None,
                 add_bos_token: bool = True, add_eos_token: bool = False, padding_side: str = "right",
                 truncation_side: str = "right", model_max_length: Optional[int] = None,
                 clean_up_tokenization_spaces: bool = False):
        for key, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if side not in ("left", "right"):
                raise ValueError(f"{type(self).__name__} {key} must be 'left' or 'right', got {side!r}")
        self.unk_token, self.bos_token, self.eos_token, self.pad_token = unk_token, bos_token, eos_token, pad_token
        self.add_bos_token, self.add_eos_token = bool(add_bos_token), bool(add_eos_token)
        self.padding_side, self.truncation_side = padding_side, truncation_side
        self.model_max_length = model_max_length
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self._special_ids: Dict[str, int] = {}
        for key in ("unk_token", "bos_token", "eos_token", "pad_token"):
            token = getattr(self, key)
            if token is None:
                continue
            token_id = self._token_to_id(token)
            if token_id is None:
                raise ValueError(f"{type(self).__name__} {key} {token!r} is not in the vocabulary")
            self._special_ids[token] = token_id
        # Longest first, so that a special token containing another one wins.
        specials = sorted(self._special_ids, key=len, reverse=True)
        self._special_pattern = re.compile("(" + "|".join(map(re.escape, specials)) + ")") if specials else None

    # --- what a backend supplies ---------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids the model knows."""

    @abc.abstractmethod
    def _encode_plain(self, texts: List[str]) -> List[List[int]]:
        """Ids of each text, with no special-token handling."""

    @abc.abstractmethod
    def _decode_plain(self, ids: List[int]) -> str:
        """Text of a run of ordinary (non-special) ids."""

    @abc.abstractmethod
    def _token_to_id(self, token: str) -> Optional[int]:
        """Id of a vocabulary entry, or None if the vocabulary lacks it."""

    @abc.abstractmethod
    def _id_to_token(self, index: int) -> str:
        """Vocabulary entry of an in-range id."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """Hex digest of everything that changes `encode` output (used as a cache key)."""

    # --- special tokens ------------------------------------------------------------------------------
    def _id_of(self, token: Optional[str]) -> Optional[int]:
        return None if token is None else self._special_ids[token]

    @property
    def unk_token_id(self) -> Optional[int]:
        return self._id_of(self.unk_token)

    @property
    def bos_token_id(self) -> Optional[int]:
        return self._id_of(self.bos_token)

    @property
    def eos_token_id(self) -> Optional[int]:
        return self._id_of(self.eos_token)

    @property
    def pad_token_id(self) -> Optional[int]:
        return self._id_of(self.pad_token)

    @property
    def all_special_ids(self) -> List[int]:
        return sorted(set(self._special_ids.values()))

    def __len__(self) -> int:
        return self.vocab_size

    def num_special_tokens_to_add(self) -> int:
        """How many ids `build_inputs_with_special_tokens` adds to a sequence."""
        return int(self.add_bos_token and self.bos_token is not None) + \
            int(self.add_eos_token and self.eos_token is not None)

    def build_inputs_with_special_tokens(self, token_ids: List[int]) -> List[int]:
        """`token_ids` with bos/eos added as `add_bos_token`/`add_eos_token` say."""
        bos = [self.bos_token_id] if self.add_bos_token and self.bos_token is not None else []
        eos = [self.eos_token_id] if self.add_eos_token and self.eos_token is not None else []
        return bos + list(token_ids) + eos

    # --- encoding ------------------------------------------------------------------------------------
    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> List[List[int]]:
        """Ids of many texts in one backend call; special-token strings in the text map to their ids."""
        pieces = [self._special_pattern.split(t) if self._special_pattern else [t] for t in texts]
        # split() with one capture group alternates plain text (even index) and special tokens (odd index).
        plain = [part for parts in pieces for part in parts[0::2] if part]
        encoded = iter(self._encode_plain(plain))
        result = []
        for parts in pieces:
            ids = []
            for i, part in enumerate(parts):
                if i % 2:
                    ids.append(self._special_ids[part])
                elif part:
                    ids.extend(next(encoded))
            result.append(self.build_inputs_with_special_tokens(ids) if add_special_tokens else ids)
        return result

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        """Ids of one text, with bos/eos if `add_special_tokens`."""
        return self.encode_batch([text], add_special_tokens)[0]

    def tokenize(self, text: str) -> List[str]:
        """Vocabulary entries of `text`, without added bos/eos."""
        return self.convert_ids_to_tokens(self.encode(text, add_special_tokens=False))

    def convert_tokens_to_ids(self, tokens: Union[str, Sequence[str]]) -> Union[int, List[int]]:
        """Id of a token, or ids of a list of tokens; unknown tokens map to `unk_token_id`."""
        if isinstance(tokens, str):
            token_id = self._token_to_id(tokens)
            return self.unk_token_id if token_id is None else token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: Union[int, Sequence[int]],
                              skip_special_tokens: bool = False) -> Union[str, List[str]]:
        """Token of an id, or tokens of a list of ids."""
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(self._checked_ids([ids])[0])
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._id_to_token(i) for i in self._checked_ids(ids) if i not in special]

    def _checked_ids(self, ids) -> List[int]:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        bad = ids[(ids < 0) | (ids >= self.vocab_size)]
        if bad.size:
            raise ValueError(f"token id {int(bad[0])} is out of range [0, {self.vocab_size}) for "
                             f"{type(self).__name__}")
        return ids.tolist()

    # --- decoding ------------------------------------------------------------------------------------
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; special tokens are dropped, or written as their token strings."""
        special = set(self.all_special_ids)
        out, run = [], []
        for i in self._checked_ids(ids):
            if i not in special:
                run.append(i)
                continue
            if run:
                out.append(self._decode_run(run, at_start=not out))
                run = []
            if not skip_special_tokens:
                out.append(self._id_to_token(i))
        if run:
            out.append(self._decode_run(run, at_start=not out))
        text = "".join(out)
        if self.clean_up_tokenization_spaces:
            for before, after in _CLEANUP:
                text = text.replace(before, after)
        return text

    def _decode_run(self, ids: List[int], at_start: bool) -> str:
        """Text of a run of ordinary ids; `at_start` says whether any text precedes it in the output (backends
        that strip a leading space only at the very start of a text override this)."""
        del at_start
        return self._decode_plain(ids)

    def batch_decode(self, sequences: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> List[str]:
        """`decode` of each sequence."""
        return [self.decode(s, skip_special_tokens) for s in sequences]

    # --- batching ------------------------------------------------------------------------------------
    def __call__(self, text: TextInput, max_length: Optional[int] = None,
                 padding: Union[bool, str] = False, truncation: Union[bool, str] = False,
                 add_special_tokens: bool = True, return_tensors: Optional[str] = None) -> Dict[str, object]:
        """Encode one text or a batch into `input_ids` and `attention_mask`.

        padding: False, True/'longest' (to the longest in the batch) or 'max_length'.
        truncation: cut to `max_length` (or `model_max_length`) on `truncation_side`, keeping bos/eos.
        return_tensors: None (lists), 'np' (int32 arrays) or 'ms' (mindspore Tensors); tensors are 2-D.
        """
        if padding not in _PADDING:
            raise ValueError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        if return_tensors not in (None, "np", "ms"):
            raise ValueError(f"return_tensors must be None, 'np' or 'ms', got {return_tensors!r}")
        padding = _PADDING[padding]
        single = isinstance(text, str)
        limit = max_length if max_length is not None else self.model_max_length
        if (truncation or padding == "max_length") and limit is None:
            raise ValueError("truncation and padding='max_length' need max_length (or model_max_length)")

        bodies = self.encode_batch([text] if single else list(text), add_special_tokens=False)
        batch = []
        for body in bodies:
            if truncation:
                body = self._truncate(body, max(0, limit - (self.num_special_tokens_to_add() if
                                                            add_special_tokens else 0)))
            ids = self.build_inputs_with_special_tokens(body) if add_special_tokens else body
            batch.append(self._truncate(ids, limit) if truncation else ids)

        target = {"longest": max(map(len, batch), default=0), "max_length": limit, None: None}[padding]
        masks = [[1] * len(ids) for ids in batch]
        if target is not None:
            if self.pad_token_id is None:
                raise ValueError(f"{type(self).__name__} has no pad_token; set pad_token to pad")
            batch = [self._pad(ids, target, self.pad_token_id) for ids in batch]
            masks = [self._pad(mask, target, 0) for mask in masks]
        if return_tensors is None:
            return {"input_ids": batch[0] if single else batch, "attention_mask": masks[0] if single else masks}
        if len(set(map(len, batch))) > 1:
            raise ValueError(f"return_tensors={return_tensors!r} needs equal lengths; pass padding=True")
        arrays = {"input_ids": np.array(batch, np.int32), "attention_mask": np.array(masks, np.int32)}
        if return_tensors == "ms":
            import mindspore   # imported here so plain tokenization never loads MindSpore
            return {k: mindspore.Tensor(v) for k, v in arrays.items()}
        return arrays

    def _truncate(self, ids: List[int], length: int) -> List[int]:
        if len(ids) <= length:
            return ids
        return ids[:length] if self.truncation_side == "right" else ids[len(ids) - length:]

    def _pad(self, ids: List[int], length: int, value: int) -> List[int]:
        fill = [value] * max(0, length - len(ids))
        return ids + fill if self.padding_side == "right" else fill + ids
