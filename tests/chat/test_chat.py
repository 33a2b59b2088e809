"""The chat CLI: streamed replies, history kept across turns, /reset, trimming to the context, bad config."""
import io
import os
import subprocess
import sys

import mindspore as ms
import pytest

from mindformers.chat import PLAIN_TEMPLATE, ChatSession, main
from mindformers.checkpoint import save_checkpoint
from mindformers.generation import GenerationConfig
from mindformers.models import LlamaConfig, LlamaForCausalLM
from mindformers.tokenization import LlamaTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER = os.path.join(ROOT, "mindformers", "assets", "tiny_corpus", "tokenizer.model")
SIZES = dict(hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, intermediate_size=48, vocab_size=2048)

pytestmark = pytest.mark.usefixtures("graph_mode")


@pytest.fixture(scope="module")
def session_parts():
    ms.set_seed(0)
    net = LlamaForCausalLM(LlamaConfig(**SIZES, seq_length=96, use_past=True, initializer_range=0.2))
    net.set_train(False)
    return net, LlamaTokenizer(vocab_file=TOKENIZER)


def test_history_streaming_and_trimming(session_parts):
    net, tok = session_parts
    out = io.StringIO()
    chat = ChatSession(net, tok, GenerationConfig(max_new_tokens=6), system="Answer briefly.", out=out)
    first = chat.reply("Return the value")
    second = chat.reply("And then?")
    assert [m["role"] for m in chat.history] == ["user", "assistant", "user", "assistant"]
    assert chat.history[1]["content"] == first and chat.history[3]["content"] == second
    streamed = out.getvalue()
    assert first in streamed and second in streamed  # the replies were printed as they were produced
    assert chat.template is PLAIN_TEMPLATE
    # a long turn pushes the oldest exchanges out; the system prompt stays
    long_turn = "word " * 40
    chat.reply(long_turn)
    assert "Return the value" not in [m["content"] for m in chat.history]
    assert chat.history[-2]["content"] == long_turn and len(chat._prompt_ids()) + 6 <= 96
    with pytest.raises(ValueError, match="does not fit max_position_embedding 96"):
        chat.reply("word " * 200)
    assert chat.history == []


def test_cli_reads_lines_until_exit(session_parts, tmp_path):
    net, _ = session_parts
    save_checkpoint(str(tmp_path / "ckpt"), "tiny", 1, net)
    config = os.path.join(ROOT, "configs/llama/predict_llama_tiny.yaml")
    options = [f"load_checkpoint={tmp_path / 'ckpt'}", "model.model_config.seq_length=96"] + \
        [f"model.model_config.{k}={v}" for k, v in SIZES.items()]
    out = io.StringIO()
    rc = main(["--config", config, "--max_new_tokens", "4", "--options", *options],
              stdin=io.StringIO("hello there\n/reset\n\nagain\n/exit\nnever read\n"), stdout=out)
    text = out.getvalue()
    assert rc == 0 and text.startswith("chat with LlamaForCausalLM")
    assert text.count("> ") == 5 and "(history cleared)" in text  # one prompt per line read


def test_cli_bad_options_are_one_line():
    out = subprocess.run([sys.executable, "-m", "mindformers.chat", "--config", "configs/llama/predict_llama_tiny.yaml",
                          "--options", "oops"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--options 'oops' must look like key.path=value" in out.stderr
    assert "Traceback" not in out.stderr
