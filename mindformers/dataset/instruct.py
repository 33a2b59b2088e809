"""Instruction data handlers for finetuning (upstream names), used by the loaders CommonDataLoader (common.py)
and HFDataLoader (hf_dataloader.py):

    train_dataset:
      data_loader:
        type: CommonDataLoader
        path: json                       # or parquet; load_func: load_dataset is accepted (HF-style)
        data_files: mindformers/assets/tiny_instruct/alpaca.json
        shuffle: True
        handler:
          - type: AlpacaInstructDataHandler
            prompt_template: alpaca      # alpaca | plain | chatml | ...
            columns: {prompt: question, response: answer}   # optional: the file's own field names
      input_columns: ["input_ids", "labels"]

`AlpacaInstructDataHandler` turns {instruction, input?, output} rows into (input_ids, labels) of seq_length + 1
tokens: the prompt (template + instruction + input) is tokenized with the tokenizer's bos, the response
follows with eos; labels are -100 on every prompt token and on padding, so only response tokens are learned.
`packing: pad` on the loader packs several samples per sequence (in order, padding the rest) and adds a
position_ids column that restarts at each sample, so attention and loss stay within a sample; use
input_columns: ["input_ids", "labels", "position_ids"].
Truncation (`truncation`, every handler): 'response' (default; upstream also truncates) cuts the answers'
tails first and then the prompt's head, keeping at least one answer token; 'drop' skips the example. The
loader logs how many were truncated or dropped, and why. `columns:` / `tags:` map a file's own field names
(LLaMA-Factory's dataset_info.json vocabulary, see rows.py).
"""
import logging
from collections import Counter
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..tokenization.chat_template import PLAIN_TEMPLATE, apply_chat_template
from ..tools.register import MindFormerModuleType, MindFormerRegister
from .rows import Columns, Tags

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


TRUNCATION = ("response", "drop")
TOO_LONG = "longer than seq_length + 1 (truncation: drop)"
EMPTY = "with an empty answer"
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": "history",
                  "system": "system"}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system"}
PAIRWISE_COLUMNS = {"prompt": "prompt", "query": "input", "chosen": "chosen", "rejected": "rejected",
                    "history": "history", "messages": "conversations", "system": "system"}


class _Handler:
    """What every handler shares: the length budget, truncation, and counts of examples cut or dropped."""

    def __init__(self, owner: str, tokenizer, seq_length: int, truncation: str):
        if truncation not in TRUNCATION:
            raise ValueError(f"{owner}.truncation must be 'response' or 'drop', got {truncation!r}")
        self.tokenizer, self.length, self.truncation = tokenizer, int(seq_length) + 1, truncation
        self.truncated, self.dropped = 0, Counter()   # dropped: reason -> examples

    def fit(self, prompt: Tuple[list, list], answers: List[Tuple[list, list]]) -> Optional[List[tuple]]:
        """Padded (ids, labels) of the prompt followed by each answer, cut to seq_length + 1; None if dropped.

        Every answer starts with a learned token. Truncation cuts each answer to what is left after the prompt
        (at least one token), then the prompt's head, so all answers share one prompt and keep their masks.
        """
        p_ids, p_labels = prompt
        if len(p_ids) + max(len(ids) for ids, _ in answers) > self.length:
            if self.truncation == "drop":
                self.dropped[TOO_LONG] += 1
                return None
            self.truncated += 1
            keep = max(1, self.length - len(p_ids))
            answers = [(ids[:keep], labels[:keep]) for ids, labels in answers]
            room = self.length - max(len(ids) for ids, _ in answers)
            if len(p_ids) > room:
                p_ids, p_labels = p_ids[len(p_ids) - room:], p_labels[len(p_labels) - room:]
        out = []
        for ids, labels in answers:
            row_ids = np.full(self.length, self.tokenizer.pad_token_id or 0, np.int32)
            row_labels = np.full(self.length, IGNORE, np.int32)
            n = len(p_ids) + len(ids)
            row_ids[:n], row_labels[:n] = p_ids + ids, p_labels + labels
            out.append((row_ids, row_labels))
        return out


def _history(value, where: str) -> List[Tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(h, (list, tuple)) and len(h) == 2 for h in value):
        raise ValueError(f"{where}: history must be a list of [instruction, response] pairs")
    return [(str(q).strip(), str(a).strip()) for q, a in value]


def _text(value, column: str, where: str) -> str:
    if isinstance(value, (dict, list)):
        raise ValueError(f"{where}: columns.{column} must hold text, got a {type(value).__name__}")
    return "" if value is None else str(value)


@MindFormerRegister.register(MindFormerModuleType.DATA_HANDLER)
class AlpacaInstructDataHandler(_Handler):
    """{instruction, input?, output, system?, history?} -> (input_ids, labels) with the prompt masked out.

    `columns` maps prompt / query / response / history / system to other field names.
    """

    def __init__(self, tokenizer=None, seq_length: int = 0, prompt_template: str = "alpaca",
                 truncation: str = "response", columns: Optional[Dict[str, str]] = None,
                 output_columns: Optional[List[str]] = None, padding: bool = True):
        super().__init__("AlpacaInstructDataHandler", tokenizer, seq_length, truncation)
        if prompt_template not in TEMPLATES:
            raise ValueError(f"AlpacaInstructDataHandler.prompt_template '{prompt_template}' is not one of "
                             f"{', '.join(TEMPLATES)}")
        if output_columns is not None and list(output_columns) != ["input_ids", "labels"]:
            raise ValueError(f"AlpacaInstructDataHandler.output_columns: the handler gives ['input_ids', 'labels'], "
                             f"got {output_columns!r}")
        if not padding:
            raise ValueError("AlpacaInstructDataHandler.padding: False (dynamic shapes) is not supported: rows are "
                             "padded to seq_length + 1 so one graph compiles once")
        self.template = TEMPLATES[prompt_template]
        self.columns = Columns("AlpacaInstructDataHandler", columns, ALPACA_COLUMNS, ("prompt", "response"))

    def encode(self, row: dict, where: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        get = self.columns.get
        instruction, response = _text(get(row, "prompt", where), "prompt", where).strip(), \
            _text(get(row, "response", where), "response", where).strip()
        if not response:
            self.dropped[EMPTY] += 1
            return None
        t = self.template
        system = _text(get(row, "system", where), "system", where).strip() or t.get("default_system", "")
        system_text = t["system"].format(system=system) if system and t["system"] else ""
        block = t["system_in_user"].format(system=system) if system and "system_in_user" in t else ""
        prompt = system_text
        for q, a in _history(get(row, "history", where), where):  # earlier turns are context: masked
            prompt += render_turn(t, q, system_block=block) + a + t["end"]
            block = ""
        prompt += render_turn(t, instruction, _text(get(row, "query", where), "query", where).strip(), block)
        prompt_ids = self.tokenizer.encode(prompt)
        response_ids = self.tokenizer.encode(response + t["end"].rstrip(" \n"), add_special_tokens=False)
        response_ids = response_ids + [self.tokenizer.eos_token_id]
        out = self.fit((prompt_ids, [IGNORE] * len(prompt_ids)), [(response_ids, response_ids)])
        return None if out is None else out[0]


def render_tokens(tokenizer, template: str, messages: List[dict], where: str) -> Tuple[List[int], List[int], int]:
    """(ids, labels, where the last answer starts) of a chat rendered with `template`: every assistant turn
    (and the eos after a final one) is learned, everything else is -100."""

    def render(part, generation_prompt):
        return tokenizer.encode(apply_chat_template(part, tokenizer, chat_template=template,
                                                    add_generation_prompt=generation_prompt))

    ids, labels, start = [], [], 0
    for i, message in enumerate(messages):
        before = render(messages[:i], message["role"] == "assistant") if i else []
        after = render(messages[:i + 1], False)
        if after[:len(before)] != before:
            raise ValueError(f"{where}: the chat template does not render turns as a growing prefix; "
                             f"use another template")
        if message["role"] == "assistant":
            ids, labels = ids + before[len(ids):], labels + [IGNORE] * (len(before) - len(labels))
            start, new = len(ids), after[len(before):]
            ids, labels = ids + new, labels + new
        else:
            new = after[len(ids):]
            ids, labels = ids + new, labels + [IGNORE] * len(new)
    if messages[-1]["role"] == "assistant" and tokenizer.eos_token_id is not None:
        ids, labels = ids + [tokenizer.eos_token_id], labels + [tokenizer.eos_token_id]
    return ids, labels, start


def _with_system(messages: List[dict], system, where: str) -> List[dict]:
    system = _text(system, "system", where).strip()
    if system and messages[0]["role"] != "system":
        return [{"role": "system", "content": system}] + messages
    return messages


@MindFormerRegister.register(MindFormerModuleType.DATA_HANDLER)
class SharegptDataHandler(_Handler):
    """{conversations: [{from, value}, ...], system?} (sharegpt) -> (input_ids, labels), loss on assistant turns.

    Roles: human/user -> user, gpt/assistant/model/... -> assistant, system -> system (`roles` or `tags`
    add more). The conversation is rendered with `chat_template` (a jinja2 string), else the tokenizer's chat
    template, else the plain "User: ... / Assistant: ..." layout of the chat CLI; each assistant turn's tokens
    (and the eos after the last one) are learned, everything else is -100. `columns` maps messages / system,
    `tags` the message keys and role values (LLaMA-Factory's names).
    """

    def __init__(self, tokenizer=None, seq_length: int = 0, chat_template: Optional[str] = None,
                 roles: Optional[dict] = None, truncation: str = "response", columns: Optional[Dict[str, str]] = None,
                 tags: Optional[Dict[str, str]] = None):
        super().__init__("SharegptDataHandler", tokenizer, seq_length, truncation)
        self.template = chat_template or getattr(tokenizer, "chat_template", None) or PLAIN_TEMPLATE
        self.columns = Columns("SharegptDataHandler", columns, SHAREGPT_COLUMNS, ("messages",))
        self.tags = Tags("SharegptDataHandler", tags, roles)

    def encode(self, row: dict, where: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        turns = self.columns.get(row, "messages", where)
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"{where}: '{self.columns.fields['messages']}' must be a non-empty list of turns")
        messages = _with_system([self.tags.message(t, where) for t in turns],
                                self.columns.get(row, "system", where), where)
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        if not answers:
            raise ValueError(f"{where}: no assistant turn to learn from")
        if not any(a.strip() for a in answers):
            self.dropped[EMPTY] += 1
            return None
        ids, labels, _ = render_tokens(self.tokenizer, self.template, messages, where)
        first = next((i for i, v in enumerate(labels) if v != IGNORE), None)
        if first is None:  # the template rendered no answer token and there is no eos to learn
            self.dropped[EMPTY] += 1
            return None
        out = self.fit((ids[:first], labels[:first]), [(ids[first:], labels[first:])])
        return None if out is None else out[0]


@MindFormerRegister.register(MindFormerModuleType.DATA_HANDLER)
class PairwiseDataHandler(_Handler):
    """Preference pairs -> (chosen_ids, chosen_labels, rejected_ids, rejected_labels).

    Rows are {prompt, input?, history?, system?, chosen, rejected} (strings), or sharegpt-style
    {conversations: [...], chosen, rejected} where an answer may be a {from, value} message. Both answers
    follow the same rendered prompt (SharegptDataHandler's layout and masking); truncation cuts both answers
    to the same budget and the shared prompt's head, so the pair keeps one prompt. `columns` / `tags` as in
    the other handlers.
    """

    def __init__(self, tokenizer=None, seq_length: int = 0, chat_template: Optional[str] = None,
                 roles: Optional[dict] = None, truncation: str = "response", columns: Optional[Dict[str, str]] = None,
                 tags: Optional[Dict[str, str]] = None):
        super().__init__("PairwiseDataHandler", tokenizer, seq_length, truncation)
        self.template = chat_template or getattr(tokenizer, "chat_template", None) or PLAIN_TEMPLATE
        self.columns = Columns("PairwiseDataHandler", columns, PAIRWISE_COLUMNS, ("chosen", "rejected"))
        self.tags = Tags("PairwiseDataHandler", tags, roles)

    def _conversation(self, row: dict, where: str) -> List[dict]:
        c = self.columns
        if c.has(row, "messages") or "messages" in c.named:
            turns = c.get(row, "messages", where)
            if not isinstance(turns, list) or not turns:
                raise ValueError(f"{where}: '{c.fields['messages']}' must be a non-empty list of turns")
            messages = [self.tags.message(t, where) for t in turns]
        elif c.has(row, "prompt") or "prompt" in c.named:
            messages = []
            for q, a in _history(c.get(row, "history", where), where):
                messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            query = _text(c.get(row, "query", where), "query", where).strip()
            prompt = _text(c.get(row, "prompt", where), "prompt", where).strip()
            messages.append({"role": "user", "content": prompt + (f"\n{query}" if query else "")})
        else:
            raise ValueError(f"{where}: a pairwise row needs '{c.fields['prompt']}' (columns.prompt) or "
                             f"'{c.fields['messages']}' (columns.messages) besides chosen and rejected; the row has "
                             f"{', '.join(map(repr, row))}")
        if messages[-1]["role"] != "user":
            raise ValueError(f"{where}: the conversation before chosen/rejected must end with a user turn")
        return _with_system(messages, c.get(row, "system", where), where)

    def _answer(self, row: dict, column: str, where: str) -> str:
        value = self.columns.get(row, column, where)
        if isinstance(value, dict):   # a sharegpt message: its text
            key = next((k for k in self.tags.content_keys if k in value), None)
            value = value[key] if key else None
        if not isinstance(value, str):
            raise ValueError(f"{where}: columns.{column} must be text or a message with "
                             f"{'/'.join(self.tags.content_keys)}, got {value!r}")
        return value

    def encode(self, row: dict, where: str):
        messages = self._conversation(row, where)
        answers = [self._answer(row, "chosen", where), self._answer(row, "rejected", where)]
        if not all(a.strip() for a in answers):
            self.dropped[EMPTY] += 1
            return None
        encoded = [render_tokens(self.tokenizer, self.template, messages + [{"role": "assistant", "content": a}],
                                 where) for a in answers]
        start = encoded[0][2]  # both render the same conversation up to here
        out = self.fit((encoded[0][0][:start], encoded[0][1][:start]),
                       [(ids[start:], labels[start:]) for ids, labels, _ in encoded])
        return None if out is None else (*out[0], *out[1])


__all__: List[str] = ["AlpacaInstructDataHandler", "SharegptDataHandler", "PairwiseDataHandler", "render_tokens",
                       "TEMPLATES"]
