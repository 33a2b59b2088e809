"""LlamaProcessor built from an upstream-style `processor:` section."""
from mindformers.tools.register import MindFormerModuleType, build_from_config

VOCAB = "mindformers/assets/tiny_corpus/tokenizer.model"


def test_processor_builds_its_tokenizer_and_pads():
    proc = build_from_config({"type": "LlamaProcessor", "max_length": 8, "padding": "max_length",
                              "return_tensors": "np",
                              "tokenizer": {"type": "LlamaTokenizer", "vocab_file": VOCAB}},
                             MindFormerModuleType.PROCESSOR)
    out = proc(["Return the value.", "x"])
    assert out["input_ids"].shape == (2, 8)
    lengths = [min(len(proc.tokenizer.encode(t)), 8) for t in ["Return the value.", "x"]]
    assert out["attention_mask"].sum(axis=1).tolist() == lengths
