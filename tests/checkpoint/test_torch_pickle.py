"""PyTorch pickles: refused by default; with allow_pickle_checkpoint read without torch and without running code."""
import os
import pickle
import zipfile

import numpy as np
import pytest

from mindformers.checkpoint import load_weights, read_weights
from mindformers.checkpoint.torch_pickle import read_torch_weights
from mindformers.config import load_config
from mindformers.models.hf import read_weights_dir
from mindformers.trainer.builders import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.path.join(ROOT, "tests", "fixtures", "hf_tiny_llama_bin")
SAFE_DIR = os.path.join(ROOT, "tests", "fixtures", "hf_tiny_llama")
HF_YAML = os.path.join(ROOT, "configs", "llama", "predict_llama_tiny_hf.yaml")


def test_committed_bin_reads_like_the_safetensors_twin():
    """The fixture was written by torch.save (scripts/make_torch_pickle_fixture.py); torch is not needed here."""
    got = read_torch_weights(os.path.join(BIN_DIR, "pytorch_model.bin"))
    want = read_weights_dir(SAFE_DIR)
    assert got.keys() == want.keys()
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)


def test_refused_unless_asked(tmp_path):
    with pytest.raises(ValueError, match=r"pytorch_model.bin is a pickle file .* set allow_pickle_checkpoint: True"):
        read_weights_dir(BIN_DIR)
    with pytest.raises(ValueError, match=r"load_checkpoint: .*pytorch_model.bin is a pickle file"):
        read_weights(os.path.join(BIN_DIR, "pytorch_model.bin"))
    config = load_config(HF_YAML, {"pretrained_model_dir": BIN_DIR})
    with pytest.raises(ValueError, match="allow_pickle_checkpoint: True"):
        build_model(config)
    config.allow_pickle_checkpoint = True
    net = build_model(config)
    want = read_weights_dir(SAFE_DIR)
    for p in net.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), want[p.name])
    # and as load_checkpoint on top of a model
    load_weights(net, os.path.join(BIN_DIR, "pytorch_model.bin"), allow_pickle=True)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def _fake_torch_zip(path, obj):
    """A zip laid out like torch.save's, holding an arbitrary pickle."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        archive.writestr("archive/version", "3\n")


def test_code_in_the_pickle_is_refused_even_when_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fake_torch_zip(tmp_path / "evil.bin", {"w": _Evil()})
    with pytest.raises(pickle.UnpicklingError, match=r"refused global (posix|os)\.system"):
        read_weights(str(tmp_path / "evil.bin"), allow_pickle=True)
    assert not (tmp_path / "pwned.txt").exists()
    (tmp_path / "legacy.pt").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(ValueError, match="legacy .pre-1.6, non-zip. torch file"):
        read_weights(str(tmp_path / "legacy.pt"), allow_pickle=True)


def test_transposed_and_typed_storages_with_torch_if_present(tmp_path):
    torch = pytest.importorskip("torch")
    state = {"t": torch.arange(12, dtype=torch.float16).reshape(3, 4).t(), "i": torch.tensor([1, 2, 3]),
             "b": torch.tensor([1.5, -2.0], dtype=torch.bfloat16), "s": torch.arange(10.0)[2:5]}
    torch.save(state, tmp_path / "x.pt")
    got = read_torch_weights(str(tmp_path / "x.pt"))
    for name, value in state.items():
        np.testing.assert_array_equal(got[name], value.float().numpy() if name == "b" else value.numpy())
