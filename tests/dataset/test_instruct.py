"""Instruction data: alpaca rows -> prompt-masked (input_ids, labels), truncation rules, bad input, finetune run."""
import json
import os

import mindspore as ms
import numpy as np
import pytest

from mindformers.checkpoint import save_checkpoint
from mindformers.config import load_config
from mindformers.dataset import AlpacaInstructDataHandler, CommonDataLoader
from mindformers.dataset import instruct
from mindformers.dataset.instruct import PairwiseDataHandler, SharegptDataHandler
from mindformers.models import LlamaConfig, LlamaForCausalLM
from mindformers.tokenization import LlamaTokenizer
from mindformers.tools.register import MindFormerModuleType, build_from_config
from mindformers.trainer.causal_lm import CausalLanguageModelingTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER = os.path.join(ROOT, "mindformers", "assets", "tiny_corpus", "tokenizer.model")
ALPACA = os.path.join(ROOT, "mindformers", "assets", "tiny_instruct", "alpaca.json")
HANDLER = [{"type": "AlpacaInstructDataHandler"}]


@pytest.fixture(scope="module")
def tok():
    return LlamaTokenizer(vocab_file=TOKENIZER)


def test_prompt_is_masked_and_response_ends_with_eos(tok):
    handler = AlpacaInstructDataHandler(tok, seq_length=63)
    ids, labels = handler.encode({"instruction": "Repeat the text.", "input": "file path", "output": "file path"}, "x")
    prompt = tok.encode("### Instruction:\nRepeat the text.\n\n### Input:\nfile path\n\n### Response:\n")
    response = tok.encode("file path", add_special_tokens=False) + [tok.eos_token_id]
    n = len(prompt) + len(response)
    assert ids.shape == labels.shape == (64,)
    assert ids[:n].tolist() == prompt + response and prompt[0] == tok.bos_token_id
    assert (labels[:len(prompt)] == -100).all() and labels[len(prompt):n].tolist() == response
    assert (labels[n:] == -100).all() and (ids[n:] == tok.pad_token_id).all()
    no_input, _ = handler.encode({"instruction": "What is 1 plus 2?", "output": "3"}, "x")
    assert tok.decode(no_input.tolist(), skip_special_tokens=True).startswith("### Instruction:\nWhat is 1 plus 2?")


def test_truncation_rules(tok):
    row = {"instruction": "Repeat the text.", "input": "", "output": "value " * 40}
    prompt = tok.encode("### Instruction:\nRepeat the text.\n\n### Response:\n")
    ids, labels = AlpacaInstructDataHandler(tok, seq_length=31).encode(row, "x")
    assert ids[:len(prompt)].tolist() == prompt  # the prompt stays whole, the response's tail is cut
    assert (labels != -100).sum() == 32 - len(prompt) and ids[-1] != tok.eos_token_id
    long_prompt = {"instruction": "Repeat the text. " * 20, "input": "", "output": "value"}
    ids, labels = AlpacaInstructDataHandler(tok, seq_length=15).encode(long_prompt, "x")
    assert (labels != -100).sum() == 1 and ids[-1] == labels[-1]  # one response token kept, prompt cut at its head
    drop = AlpacaInstructDataHandler(tok, seq_length=15, truncation="drop")
    assert drop.encode(long_prompt, "x") is None and sum(drop.dropped.values()) == 1


def test_loader_reads_files_and_shuffles_deterministically(tok, tmp_path):
    loader = CommonDataLoader(ALPACA, HANDLER, tokenizer=tok, seq_length=63, shuffle=True, seed=3)
    assert len(loader) == 400 and loader.response_tokens > 400
    assert loader.epoch_order(1).tolist() == CommonDataLoader(ALPACA, HANDLER, tokenizer=tok, seq_length=63,
                                                              shuffle=True, seed=3).epoch_order(1).tolist()
    assert loader.epoch_order(0).tolist() != loader.epoch_order(1).tolist()
    rows = json.load(open(ALPACA, encoding="utf-8"))[:3]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(CommonDataLoader(str(tmp_path / "a.jsonl"), HANDLER, tokenizer=tok, seq_length=63)) == 3


@pytest.mark.parametrize("text, message", [
    ('{"instruction": "a", "output": "b"}\n{"instruction": "a"', r"bad.jsonl:2: not valid JSON"),
    ('{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n',
     r"bad.jsonl:2: no 'output' field \(the default field of columns.response\); the row has 'instruction'"),
    ("", r"bad.jsonl: no samples"),
])
def test_bad_input_names_file_and_line(tok, tmp_path, text, message):
    (tmp_path / "bad.jsonl").write_text(text)
    with pytest.raises(ValueError, match=message):
        CommonDataLoader(str(tmp_path / "bad.jsonl"), HANDLER, tokenizer=tok, seq_length=63)


@pytest.mark.usefixtures("graph_mode")
def test_finetune_from_a_checkpoint_learns_the_responses(tmp_path):
    sizes = {"seq_length": 64, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "n_kv_heads": 2,
             "intermediate_size": 128, "vocab_size": 2048}
    ms.set_seed(0)
    save_checkpoint(str(tmp_path / "base"), "base", 1, LlamaForCausalLM(LlamaConfig(**sizes)))
    config = load_config(os.path.join(ROOT, "configs/llama/finetune_llama_tiny_alpaca.yaml"),
                         {"output_dir": str(tmp_path / "ft"), "load_checkpoint": str(tmp_path / "base"),
                          "runner_config.stop_step": 30, "lr_schedule.warmup_steps": 2,
                          **{f"model.model_config.{k}": v for k, v in sizes.items()}})
    history = CausalLanguageModelingTrainer().train(config, is_finetune=True)
    first, last = np.mean([r["loss"] for r in history[:3]]), np.mean([r["loss"] for r in history[-3:]])
    assert len(history) == 30 and last < first - 1.0


CHAT = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Repeat: file"},
                          {"from": "gpt", "value": "file"}, {"from": "human", "value": "Again"},
                          {"from": "gpt", "value": "file path"}]}


def test_sharegpt_learns_every_assistant_turn(tok):
    ids, labels = SharegptDataHandler(tok, seq_length=63).encode(CHAT, "x")
    n = int((ids != tok.pad_token_id).sum())
    assert tok.decode(ids[:n].tolist(), skip_special_tokens=False) == \
        "<s> Be brief.\n\nUser: Repeat: file\nAssistant: file\nUser: Again\nAssistant: file path\n</s>"
    learned = [[]]
    for t in labels[:n].tolist():  # runs of learned tokens, one per assistant turn
        if t == -100:
            learned[-1] and learned.append([])
        else:
            learned[-1].append(t)
    assert [tok.decode(run) for run in learned if run] == ["file\n", "file path\n"]
    assert labels[n - 1] == tok.eos_token_id


def test_sharegpt_bad_turns_and_truncation(tok):
    with pytest.raises(ValueError, match=r"x: turn .* has the unknown role 'robot'"):
        SharegptDataHandler(tok, seq_length=63).encode({"conversations": [{"from": "robot", "value": "hi"}]}, "x")
    with pytest.raises(ValueError, match="no assistant turn"):
        SharegptDataHandler(tok, seq_length=63).encode({"conversations": [{"from": "human", "value": "hi"}]}, "x")
    short = SharegptDataHandler(tok, seq_length=30)
    ids, labels = short.encode(CHAT, "x")  # cut after the first answer: still learns it
    assert (labels != -100).sum() >= 1 and (ids != tok.pad_token_id).all()
    assert SharegptDataHandler(tok, seq_length=30, truncation="drop").encode(CHAT, "x") is None
    ids, labels = SharegptDataHandler(tok, seq_length=12).encode(CHAT, "x")  # no answer fits: the context's head
    assert (labels != -100).sum() == 1 and labels[-1] == ids[-1]               # is cut, one answer token kept


@pytest.mark.usefixtures("graph_mode")
def test_lora_sft_on_sharegpt(tmp_path):
    sizes = {"seq_length": 128, "hidden_size": 64, "num_layers": 2, "num_heads": 4, "n_kv_heads": 2,
             "intermediate_size": 128, "vocab_size": 2048}
    ms.set_seed(0)
    save_checkpoint(str(tmp_path / "base"), "base", 1, LlamaForCausalLM(LlamaConfig(**sizes)))
    config = load_config(os.path.join(ROOT, "configs/llama/finetune_llama_tiny_sharegpt.yaml"),
                         {"output_dir": str(tmp_path / "ft"), "load_checkpoint": str(tmp_path / "base"),
                          "runner_config.stop_step": 20, "lr_schedule.warmup_steps": 2,
                          "lr_schedule.learning_rate": 2e-2,
                          **{f"model.model_config.{k}": v for k, v in sizes.items()},
                          "model.model_config.pet_config": {"pet_type": "lora", "lora_rank": 8, "lora_alpha": 16,
                                                            "target_modules": r".*\.(q_proj|v_proj|up_proj)"}})
    history = CausalLanguageModelingTrainer().train(config, is_finetune=True)
    first, last = np.mean([r["loss"] for r in history[:3]]), np.mean([r["loss"] for r in history[-3:]])
    assert last < first - 0.5 and (tmp_path / "ft" / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("name, expected", [
    ("chatml", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
               "Hello<|im_end|>\n<|im_start|>user\nRepeat.\na b<|im_end|>\n<|im_start|>assistant\n"),
    ("llama2", "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello [INST] Repeat.\na b [/INST] "),
    ("llama3", "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user"
               "<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nRepeat.\na b<|eot_id|><|start_header_id|>assistant"
               "<|end_header_id|>\n\n"),
    ("default", "Be brief.\n\nHuman: Hi\nAssistant: Hello\nHuman: Repeat.\na b\nAssistant: "),
])
def test_named_templates_with_system_and_history(tok, name, expected):
    row = {"instruction": "Repeat.", "input": "a b", "output": "a b", "system": "Be brief.",
           "history": [["Hi", "Hello"]]}
    ids, labels = AlpacaInstructDataHandler(tok, seq_length=255, prompt_template=name).encode(row, "x")
    prompt_len = int(np.argmax(labels != -100))
    assert ids[:prompt_len].tolist() == tok.encode(expected)  # history and system are masked context
    learned = tok.decode([int(v) for v in labels if v != -100], skip_special_tokens=False)
    assert learned.strip().startswith("a b") and learned.endswith("</s>")


def test_qwen_template_brings_its_default_system_and_bad_history_is_an_error(tok):
    ids, labels = AlpacaInstructDataHandler(tok, seq_length=127, prompt_template="qwen").encode(
        {"instruction": "Hi", "output": "Hello"}, "x")
    assert tok.decode(ids.tolist(), skip_special_tokens=True).startswith(
        "<|im_start|>system\nYou are a helpful assistant.")
    with pytest.raises(ValueError, match="history must be a list of \\[instruction, response\\] pairs"):
        AlpacaInstructDataHandler(tok, seq_length=127).encode({"instruction": "a", "output": "b", "history": "x"}, "x")
    with pytest.raises(ValueError, match="prompt_template 'vicuna' is not one of alpaca, plain, empty, default"):
        AlpacaInstructDataHandler(tok, seq_length=127, prompt_template="vicuna")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_pairwise_truncation_keeps_the_pair_with_one_prompt(tok):
    row = {"prompt": "Reverse the order of the words. " + "file path " * 4, "chosen": "value name " * 30,
           "rejected": "name value " * 20 + "end"}
    handler = PairwiseDataHandler(tok, seq_length=39)
    chosen_ids, chosen_labels, rejected_ids, rejected_labels = handler.encode(row, "x")
    prompt_len = int(np.argmax(chosen_labels != -100))
    assert prompt_len == int(np.argmax(rejected_labels != -100)) > 0
    assert (chosen_ids[:prompt_len] == rejected_ids[:prompt_len]).all()   # the same (whole) prompt
    for ids, labels in ((chosen_ids, chosen_labels), (rejected_ids, rejected_labels)):
        assert (labels[prompt_len:] == ids[prompt_len:]).all() and (labels[:prompt_len] == -100).all()
        assert ids[-1] != tok.pad_token_id   # each answer fills the rest of the window, its tail cut
    assert handler.truncated == 1
    # a prompt longer than the window: its head is cut the same way for both answers
    long = dict(row, prompt="Repeat the text. " * 20)
    c_ids, c_labels, r_ids, r_labels = PairwiseDataHandler(tok, seq_length=15).encode(long, "x")
    assert (c_labels != -100).sum() == (r_labels != -100).sum() == 1 and (c_ids[:15] == r_ids[:15]).all()
    drop = PairwiseDataHandler(tok, seq_length=39, truncation="drop")
    assert drop.encode(row, "x") is None and drop.dropped == {"longer than seq_length + 1 (truncation: drop)": 1}


def test_loader_logs_truncation_once_and_drop_mode_counts_in_the_one_batch_error(tok, tmp_path, monkeypatch):
    long = {"instruction": "Repeat the text.", "output": "value " * 40}
    short = {"instruction": "What is 1 plus 2?", "output": "3"}
    path = write_jsonl(tmp_path / "d.jsonl", [long, short, long, {"instruction": "Say nothing.", "output": " "},
                                              long, short])
    warnings = []
    monkeypatch.setattr(instruct.logger, "warning", lambda msg, *args: warnings.append(msg % args))
    kept = CommonDataLoader(path, HANDLER, tokenizer=tok, seq_length=47)
    assert len(kept) == 5 and all((s[1] != -100).any() for s in kept.samples)
    assert warnings[0] == ("CommonDataLoader: 3 of 6 examples were longer than seq_length + 1 = 48 tokens and were "
                           "truncated (truncation: response; 'drop' skips them instead)")
    summary = (f"6 examples read from {path}, 4 dropped (3 longer than seq_length + 1 (truncation: drop); 1 with an "
               f"empty answer), 0 truncated, 2 kept")
    config = {"data_loader": {"type": "CommonDataLoader", "data_files": path,
                              "handler": [{"type": "AlpacaInstructDataHandler", "truncation": "drop"}]},
              "input_columns": ["input_ids", "labels"], "batch_size": 4}
    with pytest.raises(ValueError, match="gives 2 samples .* too few for one batch: batch_size 4 on 1 device") as err:
        build_from_config({"type": "CausalLanguageModelDataset", "dataset_config": config},
                          MindFormerModuleType.DATASET, tokenizer=tok, seq_length=47)
    assert summary in str(err.value)
    only_long = write_jsonl(tmp_path / "l.jsonl", [long])
    with pytest.raises(ValueError, match=r"no sample left after the handlers: 1 examples read from .*l.jsonl, 1 "
                                         r"dropped \(1 longer than seq_length \+ 1 \(truncation: drop\)\)"):
        CommonDataLoader(only_long, [{"type": "AlpacaInstructDataHandler", "truncation": "drop"}], tokenizer=tok,
                         seq_length=47)


def test_json_array_rows_are_named_by_line(tok, tmp_path):
    (tmp_path / "a.json").write_text('[\n  {"instruction": "a", "output": "b"},\n\n  {"instruction": "c"}\n]\n')
    with pytest.raises(ValueError, match=r"a.json:4: no 'output' field"):
        CommonDataLoader(str(tmp_path / "a.json"), HANDLER, tokenizer=tok, seq_length=63)
    (tmp_path / "b.json").write_text('[{"instruction": "a", "output": "b"}\n {"instruction": "c"}]')
    with pytest.raises(ValueError, match=r"b.json:2: not valid JSON \(expected ',' or '\]'\)"):
        CommonDataLoader(str(tmp_path / "b.json"), HANDLER, tokenizer=tok, seq_length=63)
