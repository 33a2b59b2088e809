"""Reading PyTorch-saved weights (pytorch_model.bin, *.pt, *.pth) without torch and without running their code.

These files are Python pickles, which can execute arbitrary code when loaded, so they are refused unless
the YAML sets `allow_pickle_checkpoint: True`. Even then they go through a restricted unpickler that
resolves only the globals a tensor state dict needs (torch's tensor/parameter rebuild functions, the typed
storage classes, OrderedDict); any other global in the file is refused by name. Tensor bytes are read from
the zip archive (torch >= 1.6 format) straight into numpy; bfloat16 goes through its bit pattern.
"""
import collections
import io
import os
import pickle
import zipfile
from typing import Dict

import numpy as np

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl")


def bf16_bits_to_fp32(bits: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns -> float32 (exact: bf16 is the top half of an fp32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)
OPT_IN = "allow_pickle_checkpoint: True"

# storage class name -> numpy dtype of its elements ("bfloat16" is decoded from uint16 bits)
_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
             "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
             "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class _StorageType:
    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *_unused):
    """A numpy view of `storage` with torch's size/stride (in elements), copied to own its memory."""
    itemsize = storage.itemsize
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride)).copy()


def _rebuild_parameter(data, *_unused):
    return data


_ALLOWED = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("collections", "OrderedDict"): collections.OrderedDict}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(file)
        self.archive, self.prefix, self.source = archive, prefix, source
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"{self.source}: refused global {module}.{name} (only tensor state dicts are "
                                     f"read from pickled checkpoints)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self.source}: unexpected persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"{self.source}: unexpected storage type {storage_type!r}")
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}/data/{key}")
            dtype = _STORAGES[storage_type.name]
            if dtype == "bfloat16":
                self.storages[key] = bf16_bits_to_fp32(np.frombuffer(raw, np.uint16))
            else:
                self.storages[key] = np.frombuffer(raw, dtype)
        return self.storages[key]


def is_pickle_file(path: str) -> bool:
    return path.endswith(PICKLE_SUFFIXES)


def refuse(path: str, what: str = "load_checkpoint"):
    raise ValueError(f"{what}: {path} is a pickle file (PyTorch .bin/.pt/.pth), which can run code when loaded; "
                     f"convert it to safetensors, or set {OPT_IN} to read its tensors with a restricted "
                     f"unpickler")


def read_torch_weights(path: str) -> Dict[str, np.ndarray]:
    """name -> numpy array of a torch.save()d state dict (zip format), through the restricted unpickler."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: a legacy (pre-1.6, non-zip) torch file; re-save it with torch.save (zip) or as "
                         f"safetensors")
    with zipfile.ZipFile(path) as archive:
        pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ValueError(f"{path}: no data.pkl in the archive; not a torch.save() file")
        prefix = pkl[:-len("/data.pkl")] if "/" in pkl else ""
        state = _RestrictedUnpickler(io.BytesIO(archive.read(pkl)), archive, prefix, path).load()
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise ValueError(f"{path}: not a flat state dict of tensors")
    return {str(k): v for k, v in state.items()}
