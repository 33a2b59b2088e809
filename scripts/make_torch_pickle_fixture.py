"""Build tests/fixtures/hf_tiny_llama_bin/: the hf_tiny_llama fixture saved the pre-safetensors way
(pytorch_model.bin, a torch.save() zip pickle, bfloat16), for the restricted-unpickler tests.

    pip install torch==2.13.0
    python scripts/make_torch_pickle_fixture.py
"""
import os
import shutil

import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "tests", "fixtures", "hf_tiny_llama")
DST = os.path.join(ROOT, "tests", "fixtures", "hf_tiny_llama_bin")

if __name__ == "__main__":
    shutil.rmtree(DST, ignore_errors=True)
    os.makedirs(DST)
    shutil.copy(os.path.join(SRC, "config.json"), DST)
    state = load_file(os.path.join(SRC, "model.safetensors"))  # bfloat16 tensors
    torch.save(state, os.path.join(DST, "pytorch_model.bin"))
    print(DST, sorted(os.listdir(DST)), os.path.getsize(os.path.join(DST, "pytorch_model.bin")), "bytes")
