"""Instruction data for finetuning: a local json/jsonl/parquet loader with a handler list (upstream names).

    train_dataset:
      data_loader:
        type: CommonDataLoader
        path: json                       # or parquet; load_func: load_dataset is accepted (HF-style)
        data_files: mindformers/assets/tiny_instruct/alpaca.json
        shuffle: True
        handler:
          - type: AlpacaInstructDataHandler
            prompt_template: alpaca      # alpaca | plain
      input_columns: ["input_ids", "labels"]

`AlpacaInstructDataHandler` turns {instruction, input?, output} rows into (input_ids, labels) of seq_length + 1
tokens: the prompt (template + instruction + input) is tokenized with the tokenizer's bos, the response
follows with eos; labels are -100 on every prompt token and on padding, so only response tokens are learned.
`packing: pad` on the loader packs several samples per sequence (in order, padding the rest) and adds a
position_ids column that restarts at each sample, so attention and loss stay within a sample; use
input_columns: ["input_ids", "labels", "position_ids"].
Truncation (explicit, `truncation`): 'response' cuts the response's tail first and then the prompt's head
(keeping at least one response token), 'drop' skips the sample; skips are counted and logged.
"""
import json
import logging
import os
from typing import List, Optional, Tuple

import numpy as np

from ..tools.paths import resolve_repo_path
from ..tools.register import MindFormerModuleType, MindFormerRegister, build_from_config

logger = logging.getLogger("mindformers")
IGNORE = -100

# Named prompt layouts (upstream / MindSpeed-LLM names). `user` gets {query} (instruction and input joined by a
# newline; alpaca keeps its own sections) and, for llama2, the system block; the response is followed by `end`.
TEMPLATES = {
    "alpaca": {"system": "{system}\n\n", "user": "### Instruction:\n{instruction}\n\n{input_block}### Response:\n",
               "end": "\n\n"},
    "plain": {"system": "{system}\n\n", "user": "{query}\n", "end": "\n"},
    "empty": {"system": "{system}", "user": "{query}", "end": ""},
    "default": {"system": "{system}\n\n", "user": "Human: {query}\nAssistant: ", "end": "\n"},
    "chatml": {"system": "<|im_start|>system\n{system}<|im_end|>\n",
               "user": "<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n", "end": "<|im_end|>\n"},
    "qwen": {"system": "<|im_start|>system\n{system}<|im_end|>\n",
             "user": "<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n", "end": "<|im_end|>\n",
             "default_system": "You are a helpful assistant."},
    "llama2": {"system": "", "system_in_user": "<<SYS>>\n{system}\n<</SYS>>\n\n",
               "user": "[INST] {system_block}{query} [/INST] ", "end": " "},
    "llama3": {"system": "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
               "user": "<|start_header_id|>user<|end_header_id|>\n\n{query}<|eot_id|>"
                       "<|start_header_id|>assistant<|end_header_id|>\n\n", "end": "<|eot_id|>"},
}


def render_turn(template: dict, instruction: str, input_text: str = "", system_block: str = "") -> str:
    """The user part of one turn in `template`."""
    query = instruction + (f"\n{input_text}" if input_text else "")
    input_block = f"### Input:\n{input_text}\n\n" if input_text else ""
    return template["user"].format(query=query, instruction=instruction, input_block=input_block,
                                   system_block=system_block)


def read_rows(path: str, kind: Optional[str] = None) -> List[dict]:
    """Rows of a .json (a list of objects), .jsonl or .parquet file; errors name the file and line."""
    path = resolve_repo_path(path, "data_files")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data_files {path} does not exist")
    kind = kind if kind in ("json", "parquet") else ("parquet" if path.endswith(".parquet") else "json")
    if kind == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from None
        rows = pq.read_table(path).to_pylist()
    else:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if text.lstrip().startswith("["):
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        else:
            rows = []
            for line_no, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
    if not rows:
        raise ValueError(f"{path}: no samples")
    bad = next((i for i, r in enumerate(rows, 1) if not isinstance(r, dict)), None)
    if bad:
        raise ValueError(f"{path}: sample {bad} is not a JSON object")
    return rows


@MindFormerRegister.register(MindFormerModuleType.DATA_HANDLER)
class AlpacaInstructDataHandler:
    """{instruction, input?, output} -> (input_ids, labels) with the prompt masked out of the loss."""

    def __init__(self, tokenizer=None, seq_length: int = 0, prompt_template: str = "alpaca",
                 truncation: str = "response", output_columns: Optional[List[str]] = None, padding: bool = True):
        if prompt_template not in TEMPLATES:
            raise ValueError(f"AlpacaInstructDataHandler.prompt_template '{prompt_template}' is not one of "
                             f"{', '.join(TEMPLATES)}")
        if truncation not in ("response", "drop"):
            raise ValueError(f"AlpacaInstructDataHandler.truncation must be 'response' or 'drop', got {truncation!r}")
        if not padding:
            raise ValueError("AlpacaInstructDataHandler.padding: False (dynamic shapes) is not supported: rows are "
                             "padded to seq_length + 1 so one graph compiles once")
        self.tokenizer, self.seq_length = tokenizer, int(seq_length)
        self.template, self.truncation = TEMPLATES[prompt_template], truncation
        self.skipped = 0

    def encode(self, row: dict, where: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        missing = [k for k in ("instruction", "output") if k not in row]
        if missing:
            raise ValueError(f"{where}: missing {missing}; alpaca rows need instruction, output (input, system and "
                             f"history optional)")
        t = self.template
        system = str(row.get("system") or t.get("default_system") or "").strip()
        history = row.get("history") or []
        if not isinstance(history, list) or not all(isinstance(h, (list, tuple)) and len(h) == 2 for h in history):
            raise ValueError(f"{where}: history must be a list of [instruction, response] pairs")
        system_text = t["system"].format(system=system) if system and t["system"] else ""
        block = t["system_in_user"].format(system=system) if system and "system_in_user" in t else ""
        prompt = system_text
        for q, a in history:  # earlier turns are context: masked like the prompt
            prompt += render_turn(t, str(q).strip(), system_block=block) + str(a).strip() + t["end"]
            block = ""
        prompt += render_turn(t, str(row["instruction"]).strip(), str(row.get("input") or "").strip(), block)
        prompt_ids = self.tokenizer.encode(prompt)
        response_ids = self.tokenizer.encode(str(row["output"]).strip() + t["end"].rstrip(" \n"),
                                             add_special_tokens=False)
        response_ids = response_ids + [self.tokenizer.eos_token_id]
        length = self.seq_length + 1
        if len(prompt_ids) + len(response_ids) > length:
            if self.truncation == "drop":
                self.skipped += 1
                return None
            response_ids = response_ids[:max(1, length - len(prompt_ids))]
            prompt_ids = prompt_ids[len(prompt_ids) + len(response_ids) - length:] \
                if len(prompt_ids) + len(response_ids) > length else prompt_ids
        ids = np.full(length, self.tokenizer.pad_token_id or 0, np.int32)
        labels = np.full(length, IGNORE, np.int32)
        n = len(prompt_ids) + len(response_ids)
        ids[:n] = prompt_ids + response_ids
        labels[len(prompt_ids):n] = response_ids
        return ids, labels


_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
          "bing": "assistant", "bard": "assistant", "model": "assistant", "system": "system"}


@MindFormerRegister.register(MindFormerModuleType.DATA_HANDLER)
class SharegptDataHandler:
    """{conversations: [{from, value}, ...]} (sharegpt) -> (input_ids, labels), loss on every assistant turn.

    Roles: human/user -> user, gpt/assistant/model/... -> assistant, system -> system (`roles` adds more).
    The conversation is rendered with `chat_template` (a jinja2 string), else the tokenizer's chat template,
    else the plain "User: ... / Assistant: ..." layout of the chat CLI; each assistant turn's tokens (and the
    eos after the last one) are learned, everything else is -100. Conversations longer than seq_length + 1
    keep their first turns up to the limit (a cut assistant turn still counts), or are dropped with
    truncation: drop.
    """

    def __init__(self, tokenizer=None, seq_length: int = 0, chat_template: Optional[str] = None,
                 roles: Optional[dict] = None, truncation: str = "response", column: str = "conversations"):
        from ..chat import PLAIN_TEMPLATE
        if truncation not in ("response", "drop"):
            raise ValueError(f"SharegptDataHandler.truncation must be 'response' or 'drop', got {truncation!r}")
        self.tokenizer, self.seq_length, self.truncation, self.column = tokenizer, int(seq_length), truncation, column
        self.template = chat_template or getattr(tokenizer, "chat_template", None) or PLAIN_TEMPLATE
        self.roles = {**_ROLES, **(roles or {})}
        self.skipped = 0

    def _render(self, messages, generation_prompt: bool) -> List[int]:
        from ..generation import apply_chat_template
        return self.tokenizer.encode(apply_chat_template(messages, self.tokenizer, chat_template=self.template,
                                                         add_generation_prompt=generation_prompt))

    def encode(self, row: dict, where: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        turns = row.get(self.column)
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"{where}: needs a non-empty '{self.column}' list of {{from, value}} turns")
        messages = []
        for t in turns:
            role = self.roles.get(str(t.get("from", t.get("role", ""))).lower()) if isinstance(t, dict) else None
            if role is None or not isinstance(t.get("value", t.get("content")), str):
                raise ValueError(f"{where}: turn {t!r} needs from (one of {', '.join(sorted(self.roles))}) and value")
            messages.append({"role": role, "content": t.get("value", t.get("content"))})
        if not any(m["role"] == "assistant" for m in messages):
            raise ValueError(f"{where}: no assistant turn to learn from")
        ids, labels = [], []
        for i, message in enumerate(messages):
            before = self._render(messages[:i], message["role"] == "assistant") if i else []
            after = self._render(messages[:i + 1], False)
            if after[:len(before)] != before:
                raise ValueError(f"{where}: the chat template does not render turns as a growing prefix; "
                                 f"use another template")
            new = after[len(ids):] if message["role"] != "assistant" else after[len(before):]
            if message["role"] == "assistant":
                ids, labels = ids + before[len(ids):], labels + [IGNORE] * (len(before) - len(labels))
                ids, labels = ids + new, labels + new
            else:
                ids, labels = ids + new, labels + [IGNORE] * len(new)
        if messages[-1]["role"] == "assistant" and self.tokenizer.eos_token_id is not None:
            ids, labels = ids + [self.tokenizer.eos_token_id], labels + [self.tokenizer.eos_token_id]
        length = self.seq_length + 1
        if len(ids) > length:
            if self.truncation == "drop" or all(v == IGNORE for v in labels[:length]):
                self.skipped += 1
                return None
            ids, labels = ids[:length], labels[:length]
        out_ids = np.full(length, self.tokenizer.pad_token_id or 0, np.int32)
        out_labels = np.full(length, IGNORE, np.int32)
        out_ids[:len(ids)], out_labels[:len(labels)] = ids, labels
        return out_ids, out_labels


@MindFormerRegister.register(MindFormerModuleType.DATA_HANDLER)
class PairwiseDataHandler:
    """Preference pairs -> (chosen_ids, chosen_labels, rejected_ids, rejected_labels).

    Rows are {prompt, chosen, rejected} (strings), or sharegpt-style {conversations: [...], chosen: {from,
    value}, rejected: {from, value}}. Both answers follow the same rendered prompt (SharegptDataHandler's
    layout and masking); a pair where either side does not fit seq_length + 1 is skipped and counted.
    """

    def __init__(self, tokenizer=None, seq_length: int = 0, chat_template: Optional[str] = None,
                 roles: Optional[dict] = None):
        self.turns = SharegptDataHandler(tokenizer, seq_length, chat_template, roles, truncation="drop")

    @property
    def skipped(self) -> int:
        return self.turns.skipped

    def encode(self, row: dict, where: str):
        if "conversations" in row:
            history = list(row["conversations"])
            answers = [row.get("chosen"), row.get("rejected")]
            answers = [a.get("value") if isinstance(a, dict) else a for a in answers]
        elif "prompt" in row:
            history = [{"from": "human", "value": row["prompt"]}]
            answers = [row.get("chosen"), row.get("rejected")]
        else:
            raise ValueError(f"{where}: pairwise rows need prompt/chosen/rejected (or conversations/chosen/rejected)")
        if not all(isinstance(a, str) for a in answers):
            raise ValueError(f"{where}: chosen and rejected must both be given as text")
        out = []
        for answer in answers:
            encoded = self.turns.encode({"conversations": history + [{"from": "gpt", "value": answer}]}, where)
            if encoded is None:  # counted once by the turns handler
                return None
            out += list(encoded)
        return tuple(out)


def pack_samples(samples: List[Tuple[np.ndarray, np.ndarray]], length: int, pad_id: int) -> List[tuple]:
    """Greedy in-order packing of padded (input_ids, labels) samples into (input_ids, labels, position_ids) rows
    of `length` tokens. A sample's real length ends at its last labelled token; position ids restart at 0 for
    each sample (and for the trailing padding), which is what confines attention to a sample in the model.
    Every sample starts with a prompt token (label -100), so no loss crosses a sample boundary."""
    rows, ids, labels, positions = [], [], [], []

    def flush():
        used = len(ids)
        row_ids = np.full(length, pad_id, np.int32)
        row_labels = np.full(length, IGNORE, np.int32)
        row_pos = np.zeros(length, np.int32)
        row_ids[:used], row_labels[:used], row_pos[:used] = ids, labels, positions
        row_pos[used:] = np.arange(length - used)
        rows.append((row_ids, row_labels, row_pos))
        ids.clear(), labels.clear(), positions.clear()

    for sample_ids, sample_labels in samples:
        labelled = np.flatnonzero(sample_labels != IGNORE)
        n = int(labelled[-1]) + 1 if labelled.size else 0
        if n == 0:
            continue
        if len(ids) + n > length:
            flush()
        ids.extend(sample_ids[:n].tolist())
        labels.extend(sample_labels[:n].tolist())
        positions.extend(range(n))
    if ids:
        flush()
    return rows


@MindFormerRegister.register(MindFormerModuleType.DATASET_LOADER)
class CommonDataLoader:
    """Rows from a local json/jsonl/parquet file through a handler list; the EpochShardSampler interface."""

    def __init__(self, data_files: str, handler: List[dict], tokenizer=None, seq_length: Optional[int] = None,
                 path: str = "json", load_func: str = "load_dataset", shuffle: bool = False, seed: int = 0,
                 split: str = "train", packing: Optional[str] = None):
        if load_func != "load_dataset":
            raise ValueError(f"CommonDataLoader.load_func '{load_func}' is not supported; use load_dataset")
        if path not in ("json", "parquet") and not os.path.isfile(resolve_repo_path(path, "path")):
            raise ValueError(f"CommonDataLoader.path '{path}' must be json, parquet or a local file")
        if tokenizer is None:
            raise ValueError("CommonDataLoader needs a tokenizer (set processor.tokenizer in the config)")
        if hasattr(tokenizer, "keys"):
            tokenizer = build_from_config(tokenizer, MindFormerModuleType.TOKENIZER)
        if packing not in (None, False, "pad"):
            raise ValueError(f"CommonDataLoader.packing must be null or 'pad' (pack samples in order, pad the rest), "
                             f"got {packing!r}")
        if not handler:
            raise ValueError("CommonDataLoader needs a handler list, e.g. [{type: AlpacaInstructDataHandler}]")
        files = [data_files] if isinstance(data_files, str) else list(data_files)
        self.dataset_dir, self.shuffle, self.seed, self.seq_length = files[0], bool(shuffle), int(seed), seq_length
        handlers = [build_from_config(h, MindFormerModuleType.DATA_HANDLER, tokenizer=tokenizer,
                                      seq_length=seq_length) for h in handler]
        samples = []
        for file in files:
            for i, row in enumerate(read_rows(file, path), 1):
                sample = row
                for h in handlers:
                    sample = h.encode(sample, f"{file}: sample {i}")
                    if sample is None:
                        break
                if sample is not None:
                    samples.append(sample)
        skipped = sum(getattr(h, "skipped", 0) for h in handlers)
        if skipped:
            logger.warning("CommonDataLoader %s: %d samples longer than seq_length + 1 were skipped "
                           "(truncation: drop)", files, skipped)
        if not samples:
            raise ValueError(f"CommonDataLoader {files}: no sample left after the handlers")
        self.response_tokens = int(sum((s[1] != IGNORE).sum() for s in samples))  # of the first answer
        if packing:
            if len(samples[0]) != 2:
                raise ValueError(f"CommonDataLoader.packing packs (input_ids, labels) samples; the handlers give "
                                 f"{len(samples[0])} columns (preference pairs cannot be packed)")
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            packed = pack_samples(samples, int(seq_length) + 1, pad_id)
            logger.info("CommonDataLoader %s: packed %d samples into %d sequences", files, len(samples), len(packed))
            samples = packed
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return tuple(a.copy() for a in self.samples[index])

    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.samples))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.samples))


__all__: List[str] = ["CommonDataLoader", "AlpacaInstructDataHandler", "SharegptDataHandler", "PairwiseDataHandler",
                       "pack_samples", "read_rows", "TEMPLATES"]
