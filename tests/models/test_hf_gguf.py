"""GGUF import: a tiny file written by gguf's GGUFWriter loads into our Llama/Qwen2 with the right weights."""
import mindspore as ms
import numpy as np
import pytest

from mindformers.models import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from mindformers.models.hf import from_pretrained
from mindformers.models.hf.gguf import load_gguf

gguf = pytest.importorskip("gguf")
pytestmark = pytest.mark.usefixtures("graph_mode")

_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
          "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}


def _gguf_name(name):
    if name in _GLOBAL:
        return _GLOBAL[name]
    _, _, i, rest = name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{i}.{_LAYER[module]}.{kind}"


def _permute(w, n_heads):
    """llama.cpp's converter layout for RoPE rows (written independently from its description)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write(path, net, arch, quant=None):
    """Write `net` as a GGUF file; matrices in `quant` (a GGMLQuantizationType) when given, else float32."""
    c = net.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(c.max_position_embedding)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_layers)
    writer.add_feed_forward_length(c.ffn_hidden_size)
    writer.add_head_count(c.num_heads)
    writer.add_head_count_kv(c.n_kv_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(c.theta)
    writer.add_bos_token_id(c.bos_token_id)
    writer.add_eos_token_id(c.eos_token_id)
    expected = {}
    for p in net.get_parameters():
        w = p.asnumpy()
        if arch == "llama" and p.name.endswith(("q_proj.weight", "k_proj.weight")):
            w = _permute(w, c.num_heads if "q_proj" in p.name else c.n_kv_heads)
        if quant is not None and w.ndim == 2:
            q = gguf.quants.quantize(w, quant)
            writer.add_tensor(_gguf_name(p.name), q, raw_shape=q.shape, raw_dtype=quant)
            # row-wise blocks commute with the row permutation, so expect the dequantized original rows
            expected[p.name] = gguf.quants.dequantize(gguf.quants.quantize(p.asnumpy(), quant), quant)
        else:
            writer.add_tensor(_gguf_name(p.name), w)
            expected[p.name] = p.asnumpy()
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


def _logits(net, ids):
    return net(ms.Tensor(ids, ms.int32)).asnumpy()


IDS = np.arange(12).reshape(1, 12) % 64


def test_llama_f32_is_exact_and_undoes_the_rope_permutation(tmp_path):
    ms.set_seed(0)
    net = LlamaForCausalLM(LlamaConfig(hidden_size=64, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=64,
                                       intermediate_size=96, seq_length=32, theta=500000.0))
    _write(tmp_path / "m.gguf", net, "llama")
    loaded = load_gguf(str(tmp_path / "m.gguf"))
    c = loaded.config
    assert (c.num_heads, c.n_kv_heads, c.theta, c.max_position_embedding, c.vocab_size) == (4, 2, 500000.0, 32, 64)
    assert not c.tie_word_embeddings
    for p in net.get_parameters():
        np.testing.assert_array_equal(loaded.parameters_dict()[p.name].asnumpy(), p.asnumpy())
    np.testing.assert_array_equal(_logits(loaded, IDS), _logits(net, IDS))


@pytest.mark.parametrize("qtype", ["F16", "Q8_0"])
def test_llama_quantized_weights_dequantize(tmp_path, qtype):
    ms.set_seed(1)
    net = LlamaForCausalLM(LlamaConfig(hidden_size=64, num_layers=1, num_heads=4, n_kv_heads=4, vocab_size=64,
                                       intermediate_size=64, seq_length=16, tie_word_embeddings=True))
    expected = _write(tmp_path / "m.gguf", net, "llama", getattr(gguf.GGMLQuantizationType, qtype))
    loaded = load_gguf(str(tmp_path / "m.gguf"), seq_length=8)
    assert loaded.config.tie_word_embeddings and loaded.config.seq_length == 8
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded.parameters_dict()[name].asnumpy(), value.astype(np.float32))
    # quantization error stays small relative to the logits
    assert np.abs(_logits(loaded, IDS) - _logits(net, IDS)).max() < 0.05 * np.abs(_logits(net, IDS)).max()


def test_qwen2_with_biases_is_not_permuted(tmp_path):
    ms.set_seed(2)
    net = Qwen2ForCausalLM(Qwen2Config(hidden_size=32, num_layers=1, num_heads=4, n_kv_heads=2, vocab_size=64,
                                       intermediate_size=64, seq_length=16))
    _write(tmp_path / "q.gguf", net, "qwen2")
    loaded = load_gguf(str(tmp_path / "q.gguf"))
    assert type(loaded) is Qwen2ForCausalLM and loaded.config.qkv_has_bias
    np.testing.assert_array_equal(_logits(loaded, IDS), _logits(net, IDS))
    # pretrained_model_dir may name a .gguf file too
    again = from_pretrained(str(tmp_path / "q.gguf"), type="Qwen2Config", use_past=True)
    assert again.config.use_past
    np.testing.assert_array_equal(_logits(again, IDS), _logits(net, IDS))


def test_unknown_architecture_is_a_clear_error(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="general.architecture 'gpt2' is not supported; supported: llama, qwen2"):
        load_gguf(str(tmp_path / "x.gguf"))
