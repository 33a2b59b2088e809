"""use_chat_template (generation_config key, run_mindformer.py and chat flag): text prompts become a user turn in
the tokenizer's chat template; one line on stderr before each graph compile."""
import io

import mindspore as ms
import pytest

from mindformers.chat import PLAIN_TEMPLATE, ChatSession
from mindformers.generation import GenerationConfig, generate
from mindformers.generation.predict import predict_generation_config
from mindformers.models import LlamaConfig, LlamaForCausalLM
from mindformers.tokenization import LlamaTokenizer
from mindformers.tokenization.chat_template import encode_chat
from mindformers.tools.cli import parse_args

TINY = dict(seq_length=64, max_position_embedding=128, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2,
            vocab_size=2048, multiple_of=8, initializer_range=0.3, use_past=True)

TEMPLATE = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}[assistant]{% endif %}")


@pytest.fixture()
def chat_tokenizer():
    tok = LlamaTokenizer(vocab_file="mindformers/assets/tiny_corpus/tokenizer.model")
    tok.chat_template = TEMPLATE
    return tok


def test_text_prompts_are_rendered_as_a_user_turn(model, chat_tokenizer):
    ids = encode_chat([{"role": "user", "content": "Return the"}], chat_tokenizer)
    assert ids[:2] != [1, 1] and ids[0] == chat_tokenizer.bos_token_id  # the template's bos, not a second one
    rendered = generate(model, ["Return the"], max_new_tokens=3, tokenizer=chat_tokenizer, use_chat_template=True)
    assert rendered == generate(model, [ids], max_new_tokens=3, tokenizer=chat_tokenizer)
    raw = generate(model, ["Return the"], max_new_tokens=3, tokenizer=chat_tokenizer)  # off by default
    assert raw == generate(model, [chat_tokenizer.encode("Return the")], max_new_tokens=3)
    chat_tokenizer.chat_template = None
    with pytest.raises(ValueError, match="use_chat_template: True but LlamaTokenizer has no chat_template"):
        generate(model, ["Return the"], max_new_tokens=3, tokenizer=chat_tokenizer, use_chat_template=True)
    with pytest.raises(ValueError, match="use_chat_template must be True or False"):
        GenerationConfig(use_chat_template="yes")


def test_the_flag_and_the_yaml_key(chat_tokenizer, model):
    _, overrides = parse_args(["--config", "x.yaml", "--use_chat_template", "True"])
    assert ("generation_config.use_chat_template", True) in overrides
    assert predict_generation_config({"generation_config": {"use_chat_template": True}}).use_chat_template is True
    # chat: the tokenizer's template unless asked not to (then the plain User:/Assistant: transcript)
    gen = GenerationConfig(max_new_tokens=2)
    assert ChatSession(model, chat_tokenizer, gen, out=io.StringIO()).template == TEMPLATE
    assert ChatSession(model, chat_tokenizer, gen, out=io.StringIO(), use_chat_template=False).template \
        is PLAIN_TEMPLATE


def test_a_line_before_each_graph_compile(capsys):
    ms.set_seed(0)
    net = LlamaForCausalLM(LlamaConfig(**TINY))  # a model of its own: no graph compiled yet
    net.set_train(False)
    generate(net, [[1, 5, 9]], max_new_tokens=2)
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if line.startswith("compiling")] == [
        "compiling (2 layers): prompt graph, batch 1 x 32 tokens...",
        "compiling (2 layers): decode graph, batch 1, 64 cache slots..."]
    generate(net, [[1, 5, 9, 4]], max_new_tokens=2)  # same shapes: compiled already, nothing printed
    generate(net, [[1, 5]], max_new_tokens=2, use_past=False)
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("compiling")] == [
        "compiling (2 layers): forward graph, batch 1 x 64 tokens..."]
