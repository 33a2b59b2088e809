"""A tiny random Llama (vocab of the shipped tokenizer) shared by the generation tests, built once."""
import mindspore as ms
import pytest

from mindformers.models import LlamaConfig, LlamaForCausalLM
from mindformers.tokenization import LlamaTokenizer

# initializer_range 0.3 spreads the logits so greedy choices are not near-ties (random models at 0.02 are flat).
TINY = dict(seq_length=64, max_position_embedding=128, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2,
            vocab_size=2048, multiple_of=8, initializer_range=0.3, use_past=True)


@pytest.fixture(scope="package")
def model():
    ms.set_seed(0)
    return LlamaForCausalLM(LlamaConfig(**TINY))


@pytest.fixture(scope="package")
def tokenizer():
    return LlamaTokenizer(vocab_file="mindformers/assets/tiny_corpus/tokenizer.model")
