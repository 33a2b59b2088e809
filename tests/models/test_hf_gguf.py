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


def _write(path, net, arch, quant=None, extra=None):
    """Write `net` as a GGUF file; matrices in `quant` (a GGMLQuantizationType) when given, else float32.

    `extra(writer)` adds further keys or tensors."""
    c = net.config
    writer = gguf.GGUFWriter(str(path), arch)
    if extra is not None:
        extra(writer)
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


def _llama_with(rope_scaling, seed=3):
    ms.set_seed(seed)
    return LlamaForCausalLM(LlamaConfig(hidden_size=64, num_layers=1, num_heads=2, n_kv_heads=2, vocab_size=64,
                                        intermediate_size=64, seq_length=32, theta=500000.0,
                                        rope_scaling=rope_scaling))


def _rope_divisors(head_dim, theta, rope_scaling):
    """What llama.cpp's converter stores as rope_freqs: default inv_freq over the scaled one (own formula)."""
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)
    wavelen = 2 * np.pi / inv
    low_wl = rope_scaling["original_max_position_embeddings"] / rope_scaling["low_freq_factor"]
    high_wl = rope_scaling["original_max_position_embeddings"] / rope_scaling["high_freq_factor"]
    out = []
    for w in wavelen:
        if w < high_wl:
            out.append(1.0)
        elif w > low_wl:
            out.append(rope_scaling["factor"])
        else:
            smooth = (rope_scaling["original_max_position_embeddings"] / w - rope_scaling["low_freq_factor"]) / (
                rope_scaling["high_freq_factor"] - rope_scaling["low_freq_factor"])
            out.append(1 / ((1 - smooth) / rope_scaling["factor"] + smooth))
    return np.asarray(out, np.float32)


LLAMA31 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8192}


def test_llama31_rope_freqs_tensor_becomes_llama3_scaling(tmp_path):
    net = _llama_with(LLAMA31)
    divisors = _rope_divisors(32, 500000.0, LLAMA31)
    _write(tmp_path / "m.gguf", net, "llama", extra=lambda w: w.add_tensor("rope_freqs.weight", divisors))
    loaded = load_gguf(str(tmp_path / "m.gguf"))
    assert loaded.config.extend_method == "llama3"
    assert {**loaded.config.scaling_factor, "rope_type": "llama3"} == LLAMA31
    np.testing.assert_allclose(_logits(loaded, IDS), _logits(net, IDS), atol=1e-5, rtol=0)
    # divisors of another shape of scaling are refused, not applied approximately
    _write(tmp_path / "odd.gguf", net, "llama", extra=lambda w: w.add_tensor("rope_freqs.weight", divisors ** 0.5))
    with pytest.raises(ValueError, match="rope_freqs tensor does not match Llama 3.1 scaling"):
        load_gguf(str(tmp_path / "odd.gguf"))


@pytest.mark.parametrize("kind", ["linear", "yarn"])
def test_rope_scaling_metadata(tmp_path, kind):
    scaling = {"rope_type": kind, "factor": 4.0}
    if kind == "yarn":
        scaling["original_max_position_embeddings"] = 16

    def extra(writer):
        writer.add_rope_scaling_type(getattr(gguf.RopeScalingType, kind.upper()))
        writer.add_rope_scaling_factor(4.0)
        if kind == "yarn":
            writer.add_rope_scaling_orig_ctx_len(16)

    net = _llama_with(scaling)
    _write(tmp_path / "m.gguf", net, "llama", extra=extra)
    loaded = load_gguf(str(tmp_path / "m.gguf"))
    assert loaded.config.extend_method == kind
    np.testing.assert_allclose(_logits(loaded, IDS), _logits(net, IDS), atol=1e-5, rtol=0)


def test_partial_rotary_is_refused(tmp_path):
    net = _llama_with(None)
    _write(tmp_path / "m.gguf", net, "llama", extra=lambda w: w.add_rope_dimension_count(16))
    with pytest.raises(ValueError, match="rope.dimension_count=16 .partial rotary. is not supported"):
        load_gguf(str(tmp_path / "m.gguf"))
