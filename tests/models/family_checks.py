"""Shared checks for the Llama-derived families: a float64 numpy forward (Hugging Face semantics, incl. qkv
bias, qk-norm, explicit head_dim and top-k MoE) and the shape / causality / overfit / YAML checks."""
import os

import mindspore as ms
import numpy as np
from mindspore import Tensor

from mindformers.config import load_config
from mindformers.tools.register import MindFormerModuleType, build_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tokens(shape, seed=0, vocab=64):
    return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int32)


def np_swiglu(h, gate, up, down):
    g = h @ gate.T
    return (g / (1 + np.exp(-g)) * (h @ up.T)) @ down.T


def np_moe(h, w, prefix, names, top_k, norm_topk_prob):
    """Token-by-token MoE: softmax router, top-k experts, weights renormalized if asked; also the layer's
    load-balancing loss E * sum_e (top-k picks of e per token) * (mean probability of e)."""
    logits = h @ w[f"{prefix}.gate.weight"].T  # (N, E)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out, counts = np.zeros_like(h), np.zeros(probs.shape[-1])
    for n in range(h.shape[0]):
        picks = np.argsort(-probs[n])[:top_k]
        counts[picks] += 1
        weights = probs[n, picks] / (probs[n, picks].sum() if norm_topk_prob else 1.0)
        for e, weight in zip(picks, weights):
            gate, up, down = (w[f"{prefix}.experts.{e}.{name}.weight"] for name in names)
            out[n] += weight * np_swiglu(h[n], gate, up, down)
    aux = probs.shape[-1] * np.sum(counts / h.shape[0] * probs.mean(0))
    return out, aux


def np_logits(net, ids, ffn_name="mlp", expert_names=("gate_proj", "up_proj", "down_proj"), with_aux=False):
    """Pure-numpy forward in float64 from the net's parameters, keyed by the Hugging Face names; with_aux
    also returns the MoE load-balancing loss averaged over layers."""
    cfg = net.config
    p = {name: param.asnumpy().astype(np.float64) for name, param in net.parameters_and_names()}
    nh, nkv, hs = cfg.num_heads, cfg.n_kv_heads, cfg.head_dim
    B, T = ids.shape

    def rms(x, weight):
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + cfg.rms_norm_eps) * weight

    angles = np.outer(np.arange(T), 1.0 / cfg.theta ** (np.arange(0, hs, 2) / hs))
    cos, sin = np.cos(np.concatenate([angles] * 2, -1)), np.sin(np.concatenate([angles] * 2, -1))

    def rope(t):
        return t * cos + np.concatenate([-t[..., hs // 2:], t[..., :hs // 2]], -1) * sin

    def project(h, w, name, heads):
        y = h @ w[f"self_attn.{name}_proj.weight"].T + w.get(f"self_attn.{name}_proj.bias", 0.0)
        y = y.reshape(B, T, heads, hs)
        if name != "v" and f"self_attn.{name}_norm.weight" in w:
            y = rms(y, w[f"self_attn.{name}_norm.weight"])  # qk-norm: per head, before RoPE
        return y.transpose(0, 2, 1, 3)

    x, aux = p["model.embed_tokens.weight"][ids], []
    for i in range(cfg.num_layers):
        w = {k[len(f"model.layers.{i}."):]: v for k, v in p.items() if k.startswith(f"model.layers.{i}.")}
        h = rms(x, w["input_layernorm.weight"])
        q, k, v = project(h, w, "q", nh), project(h, w, "k", nkv), project(h, w, "v", nkv)
        q, k, v = rope(q), np.repeat(rope(k), nh // nkv, 1), np.repeat(v, nh // nkv, 1)
        att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs) + np.triu(np.full((T, T), -np.inf), 1)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + (att @ v).transpose(0, 2, 1, 3).reshape(B, T, nh * hs) @ w["self_attn.o_proj.weight"].T
        h = rms(x, w["post_attention_layernorm.weight"])
        if f"{ffn_name}.gate.weight" in w:
            flat, layer_aux = np_moe(h.reshape(B * T, -1), w, ffn_name, expert_names, cfg.num_experts_per_tok,
                                     cfg.norm_topk_prob)
            x = x + flat.reshape(x.shape)
            aux.append(layer_aux)
        else:
            x = x + np_swiglu(h, w["mlp.gate_proj.weight"], w["mlp.up_proj.weight"], w["mlp.down_proj.weight"])
    head = p["model.embed_tokens.weight"] if cfg.tie_word_embeddings else p["lm_head.weight"]
    logits = rms(x, p["model.norm.weight"]) @ head.T
    return (logits, float(np.mean(aux))) if with_aux else logits


def check_names(net, per_layer, tied=False):
    """Parameter names (and Parameter.name, what checkpoints store) are exactly the Hugging Face ones."""
    layers = net.config.num_layers
    expected = ["model.embed_tokens.weight", "model.norm.weight"] + ([] if tied else ["lm_head.weight"]) \
        + [f"model.layers.{i}.{n}" for i in range(layers) for n in per_layer]
    names = [name for name, _ in net.parameters_and_names()]
    assert sorted(names) == sorted(expected)
    assert all(param.name == name for name, param in net.parameters_and_names())


def check_causal(net, vocab=64):
    ids = tokens((1, 12), seed=2, vocab=vocab)
    changed = ids.copy()
    changed[0, 7] = (changed[0, 7] + 1) % vocab
    a, b = net(Tensor(ids)).asnumpy(), net(Tensor(changed)).asnumpy()
    assert a.shape == (1, 12, vocab) and a.dtype == np.float32
    np.testing.assert_array_equal(a[:, :7], b[:, :7])
    assert np.abs(a[:, 7:] - b[:, 7:]).max() > 1e-4


def np_cross_entropy(logits, targets):
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, targets[..., None], -1).mean()


def check_overfits(model, vocab, steps=30):
    """AdamW on one fixed batch in graph mode: the loss must at least halve."""
    from mindspore.experimental.optim import AdamW

    model.set_train(True)
    optimizer = AdamW(model.trainable_params(), lr=1e-2, weight_decay=0.0)
    grad_fn = ms.value_and_grad(model, None, optimizer.parameters)

    @ms.jit
    def step(batch):
        loss, grads = grad_fn(batch)
        optimizer(grads)
        return loss

    batch = Tensor(tokens((4, 33), seed=4, vocab=vocab))
    losses = [float(step(batch).asnumpy()) for _ in range(steps)]
    assert losses[-1] < 0.5 * losses[0], losses
    return losses


def build_from_yaml(relpath):
    """(config, model class name) of a shipped YAML, the config built through the registry."""
    cfg = load_config(os.path.join(ROOT, "configs", relpath))
    config = build_from_config(dict(cfg.model.model_config), MindFormerModuleType.CONFIG)
    return config, cfg.model.arch.type


def build_model_from_yaml(relpath):
    config, arch = build_from_yaml(relpath)
    return build_from_config({"type": arch}, MindFormerModuleType.MODELS, config=config)
