"""Llama tokenizer over a sentencepiece model (upstream name and YAML keys)."""
import hashlib
from typing import Any, Dict, List, Optional

import sentencepiece as spm

from mindformers.tools.register import MindFormerModuleType, MindFormerRegister
from ..tools.paths import resolve_repo_path
from .base import PreTrainedTokenizerBase


@MindFormerRegister.register(MindFormerModuleType.TOKENIZER)
class LlamaTokenizer(PreTrainedTokenizerBase):
    """Sentencepiece BPE tokenizer as used by Llama/Llama-2; `vocab_file` is the `tokenizer.model` file.

    The model has no pad piece, so `pad_token` defaults to `<unk>` (id 0). `legacy=True` (the only mode
    supported) encodes text after a special token with sentencepiece's usual leading-space prefix.
    `model_bytes` (a serialized ModelProto) is used instead of reading `vocab_file`, which then only names it.
    """

    def __init__(self, vocab_file: str, unk_token: Optional[str] = "<unk>", bos_token: Optional[str] = "<s>",
                 eos_token: Optional[str] = "</s>", pad_token: Optional[str] = "<unk>",
                 sp_model_kwargs: Optional[Dict[str, Any]] = None, add_bos_token: bool = True,
                 add_eos_token: bool = False, padding_side: str = "left", truncation_side: str = "right",
                 legacy: bool = True, model_max_length: Optional[int] = None,
                 clean_up_tokenization_spaces: bool = False, model_bytes: Optional[bytes] = None):
        if not legacy:
            raise ValueError("LlamaTokenizer supports only legacy: True (sentencepiece's own handling of the "
                             "space after a special token)")
        self.vocab_file = vocab_file if model_bytes is not None else \
            resolve_repo_path(vocab_file, "LlamaTokenizer vocab_file")
        try:
            if model_bytes is None:
                with open(self.vocab_file, "rb") as f:
                    model_bytes = f.read()
            self._model_bytes = model_bytes
            self.sp_model = spm.SentencePieceProcessor(**(sp_model_kwargs or {}))
            self.sp_model.LoadFromSerializedProto(self._model_bytes)
        except (OSError, RuntimeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "it does not parse as a ModelProto"
            raise ValueError(f"LlamaTokenizer vocab_file {self.vocab_file} is not a readable sentencepiece "
                             f"model ({reason})") from None
        self.sp_model_kwargs = dict(sp_model_kwargs or {})
        self.legacy = legacy
        super().__init__(unk_token=unk_token, bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
                         add_bos_token=add_bos_token, add_eos_token=add_eos_token, padding_side=padding_side,
                         truncation_side=truncation_side, model_max_length=model_max_length,
                         clean_up_tokenization_spaces=clean_up_tokenization_spaces)

    @property
    def vocab_size(self) -> int:
        return self.sp_model.get_piece_size()

    def get_vocab(self) -> Dict[str, int]:
        """Piece -> id for the whole vocabulary."""
        return {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}

    def _encode_plain(self, texts: List[str]) -> List[List[int]]:
        return self.sp_model.encode(texts) if texts else []

    def _decode_plain(self, ids: List[int]) -> str:
        return self.sp_model.decode(ids)

    def _decode_run(self, ids: List[int], at_start: bool) -> str:
        # sentencepiece drops the "▁" of a run's first piece; that space is real unless the text starts here
        # (as HF decodes: "</s> and" -> " and" after earlier text, "<s> word" when specials are kept).
        text = self.sp_model.decode(ids)
        return text if at_start or not self.sp_model.id_to_piece(ids[0]).startswith("\u2581") else " " + text

    def _token_to_id(self, token: str) -> Optional[int]:
        # piece_to_id answers unk_id for a piece it does not know; tell that apart from '<unk>' itself.
        index = self.sp_model.piece_to_id(token)
        return index if self.sp_model.id_to_piece(index) == token else None

    def _id_to_token(self, index: int) -> str:
        return self.sp_model.id_to_piece(index)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self._model_bytes)
        digest.update(repr((type(self).__name__, sorted(self.sp_model_kwargs.items()), self.unk_token,
                            self.bos_token, self.eos_token, self.pad_token, self.add_bos_token,
                            self.add_eos_token)).encode("utf-8"))
        return digest.hexdigest()
