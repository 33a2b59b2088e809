"""LLaMA-Factory-style `columns:` / `tags:` on the instruction and preference handlers, from files in tmp_path."""
import json

import numpy as np
import pytest

from mindformers.dataset import CommonDataLoader
from mindformers.dataset.instruct import AlpacaInstructDataHandler, PairwiseDataHandler, SharegptDataHandler


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def same_samples(a, b):
    return len(a) == len(b) and all(all(np.array_equal(x, y) for x, y in zip(s, t))
                                    for s, t in zip(a.samples, b.samples))


def test_alpaca_columns(tok, tmp_path):
    rows = [{"instruction": "Repeat the text.", "input": "file path", "output": "file path", "system": "Be brief."},
            {"instruction": "What is 1 plus 2?", "output": "3", "history": [["Hi", "Hello"]]}]
    renamed = [{"question": r["instruction"], "answer": r["output"], "context": r.get("input"),
                "sys": r.get("system"), "turns": r.get("history")} for r in rows]
    plain = CommonDataLoader(write_jsonl(tmp_path / "a.jsonl", rows), [{"type": "AlpacaInstructDataHandler"}],
                             tokenizer=tok, seq_length=95)
    columns = {"prompt": "question", "query": "context", "response": "answer", "system": "sys", "history": "turns"}
    mapped = CommonDataLoader(write_jsonl(tmp_path / "b.jsonl", renamed),
                              [{"type": "AlpacaInstructDataHandler", "columns": columns}], tokenizer=tok, seq_length=95)
    assert same_samples(plain, mapped)
    learned = [int(v) for v in mapped.samples[0][1] if v != -100]
    assert tok.decode(learned).strip() == "file path"
    short = CommonDataLoader(write_jsonl(tmp_path / "c.jsonl", [{"question": "Hi?", "answer": "Hello"}]),
                             [{"type": "AlpacaInstructDataHandler", "columns": {"prompt": "question",
                                                                                "response": "answer"}}],
                             tokenizer=tok, seq_length=63)
    assert tok.decode([int(v) for v in short.samples[0][1] if v != -100]).strip() == "Hello"


SHAREGPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Repeat: file"},
            {"role": "assistant", "content": "file"}, {"role": "user", "content": "Again"},
            {"role": "assistant", "content": "file path"}]


def test_sharegpt_tags_and_columns(tok, tmp_path):
    as_sharegpt = [{"conversations": [{"from": {"user": "human", "assistant": "gpt"}.get(m["role"], m["role"]),
                                       "value": m["content"]} for m in SHAREGPT]}]
    plain = CommonDataLoader(write_jsonl(tmp_path / "a.jsonl", as_sharegpt), [{"type": "SharegptDataHandler"}],
                             tokenizer=tok, seq_length=63)
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    openai = CommonDataLoader(write_jsonl(tmp_path / "b.jsonl", [{"messages": SHAREGPT}]),
                              [{"type": "SharegptDataHandler", "columns": {"messages": "messages"}, "tags": tags}],
                              tokenizer=tok, seq_length=63)
    assert same_samples(plain, openai)
    # roles and keys no default knows, and the system prompt in a column of its own
    dialog = [{"speaker": {"user": "customer", "assistant": "agent"}[m["role"]], "text": m["content"]}
              for m in SHAREGPT[1:]]
    custom = CommonDataLoader(
        write_jsonl(tmp_path / "c.jsonl", [{"dialog": dialog, "persona": "Be brief."}]),
        [{"type": "SharegptDataHandler", "columns": {"messages": "dialog", "system": "persona"},
          "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer", "assistant_tag": "agent"}}],
        tokenizer=tok, seq_length=63)
    assert same_samples(plain, custom)
    with pytest.raises(ValueError, match=r"c.jsonl:1: turn .* needs speaker and text .*it has 'role', 'content'"):
        CommonDataLoader(write_jsonl(tmp_path / "c.jsonl", [{"dialog": SHAREGPT}]),
                         [{"type": "SharegptDataHandler", "columns": {"messages": "dialog"},
                           "tags": {"role_tag": "speaker", "content_tag": "text"}}], tokenizer=tok, seq_length=63)


def test_pairwise_columns_and_sharegpt_pairs(tok, tmp_path):
    rows = [{"prompt": "What is 4 plus 9?", "chosen": "13", "rejected": "15"},
            {"prompt": "Reverse the order of the words.", "input": "data file", "chosen": "file data",
             "rejected": "data file"}]
    renamed = [{"question": r["prompt"], "context": r.get("input", ""), "good": r["chosen"], "bad": r["rejected"]}
               for r in rows]
    plain = CommonDataLoader(write_jsonl(tmp_path / "a.jsonl", rows), [{"type": "PairwiseDataHandler"}],
                             tokenizer=tok, seq_length=63)
    columns = {"prompt": "question", "query": "context", "chosen": "good", "rejected": "bad"}
    mapped = CommonDataLoader(write_jsonl(tmp_path / "b.jsonl", renamed),
                              [{"type": "PairwiseDataHandler", "columns": columns}], tokenizer=tok, seq_length=63)
    assert same_samples(plain, mapped)
    assert tok.decode([int(v) for v in mapped.samples[1][3] if v != -100]).strip() == "data file"  # rejected
    chat = [{"dialog": [{"speaker": "customer", "text": r["prompt"] + (f"\n{r['input']}" if "input" in r else "")}],
             "better": {"speaker": "agent", "text": r["chosen"]}, "worse": {"speaker": "agent", "text": r["rejected"]}}
            for r in rows]
    as_chat = CommonDataLoader(
        write_jsonl(tmp_path / "c.jsonl", chat),
        [{"type": "PairwiseDataHandler", "columns": {"messages": "dialog", "chosen": "better", "rejected": "worse"},
          "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer", "assistant_tag": "agent"}}],
        tokenizer=tok, seq_length=63)
    assert same_samples(plain, as_chat)


@pytest.mark.parametrize("handler, kwargs, message", [
    (AlpacaInstructDataHandler, {"columns": {"question": "q"}},
     r"AlpacaInstructDataHandler.columns: unknown column 'question' \(valid: prompt, query, response, history, "
     r"system\)"),
    (SharegptDataHandler, {"columns": {"prompt": "q"}},
     r"SharegptDataHandler.columns: unknown column 'prompt' \(valid: messages, system\)"),
    (SharegptDataHandler, {"tags": {"observation_tag": "tool"}},
     r"SharegptDataHandler.tags: unknown tag 'observation_tag' \(valid: role_tag, content_tag, user_tag, "
     r"assistant_tag, system_tag\)"),
    (PairwiseDataHandler, {"columns": {"response": "answer"}},
     r"PairwiseDataHandler.columns: unknown column 'response' \(valid: prompt, query, chosen, rejected, history, "
     r"messages, system\)"),
    (PairwiseDataHandler, {"columns": {"chosen": 3}}, r"PairwiseDataHandler.columns.chosen: a field name"),
    (SharegptDataHandler, {"roles": {"bot": "robot"}}, r"SharegptDataHandler.roles: 'bot' maps to 'robot'"),
    (AlpacaInstructDataHandler, {"truncation": "left"}, r"truncation must be 'response' or 'drop', got 'left'"),
])
def test_unknown_columns_and_tags_are_named(tok, handler, kwargs, message):
    with pytest.raises(ValueError, match=message):
        handler(tok, seq_length=63, **kwargs)


def test_a_mapped_column_missing_from_a_row_names_file_and_line(tok, tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"question": "a", "answer": "b", "context": "c"},
                                              {"question": "a", "answer": "b"}])
    columns = {"prompt": "question", "response": "answer", "query": "context"}
    with pytest.raises(ValueError, match=r"m.jsonl:2: no 'context' field \(columns.query\); the row has "
                                         r"'question', 'answer'"):
        CommonDataLoader(path, [{"type": "AlpacaInstructDataHandler", "columns": columns}], tokenizer=tok,
                         seq_length=63)
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "a", "good": "b", "bad": "c"}, {"question": "a"}])
    with pytest.raises(ValueError, match=r"p.jsonl:2: no 'good' field \(columns.chosen\)"):
        CommonDataLoader(path, [{"type": "PairwiseDataHandler",
                                 "columns": {"prompt": "question", "chosen": "good", "rejected": "bad"}}],
                         tokenizer=tok, seq_length=63)
