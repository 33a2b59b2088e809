"""The tiny tokenizer and a 2-layer Llama (random weights, KV cache on) shared by the evaluation tests."""
import os

import mindspore as ms
import pytest

from mindformers.models import LlamaConfig, LlamaForCausalLM
from mindformers.tokenization import LlamaTokenizer
from mindformers.tools.paths import REPO_ROOT


@pytest.fixture(scope="module")
def tokenizer():
    return LlamaTokenizer(vocab_file=os.path.join(REPO_ROOT, "mindformers", "assets", "tiny_corpus", "tokenizer.model"))


@pytest.fixture(scope="module")
def model():
    ms.set_seed(0)
    net = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=2048,
                                       intermediate_size=48, seq_length=256, use_past=True, initializer_range=0.2))
    net.set_train(False)
    return net
