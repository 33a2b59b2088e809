"""Safetensors read/write in plain numpy, including bfloat16 (numpy has no bf16 type: we go through uint16).

The format is an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} and
the raw little-endian tensor bytes. Reading it ourselves lets bf16 checkpoints load as fp32 without torch.
"""
import json
import os
import struct
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from .torch_pickle import bf16_bits_to_fp32, read_torch_weights, refuse

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

_NP_OF = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_CODE_OF = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def fp32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bfloat16 bit patterns, rounding to nearest even (NaN stays a quiet NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
    """All tensors of one .safetensors file; BF16 comes back as float32, other dtypes unchanged."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > os.fstat(f.fileno()).st_size - 8:
                raise ValueError(f"header length {size} exceeds the file")
            header = json.loads(f.read(size))
    except (OSError, struct.error, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from None
    header.pop("__metadata__", None)
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = data[begin:end]
        code, shape = info["dtype"], tuple(info["shape"])
        if code == "BF16":
            out[name] = bf16_bits_to_fp32(raw.view(np.uint16)).reshape(shape)
        elif code in _NP_OF:
            out[name] = np.array(raw.view(np.dtype(_NP_OF[code]).newbyteorder("<")).reshape(shape))
        else:
            raise ValueError(f"{path}: tensor {name} has dtype {code}; readable: BF16, {', '.join(_NP_OF)}")
    return out


def write_safetensors(path: str, tensors: Dict[str, np.ndarray], dtype: str = "float32",
                      metadata: Optional[Dict[str, str]] = None):
    """Write float tensors to `path` stored as `dtype` (float32, float16 or bfloat16)."""
    if dtype not in _CODE_OF:
        raise ValueError(f"save dtype must be one of {', '.join(_CODE_OF)}, got {dtype!r}")
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        if dtype == "bfloat16":
            blob = fp32_to_bf16_bits(np.asarray(array, np.float32)).astype("<u2").tobytes()
        else:
            blob = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
        header[name] = {"dtype": _CODE_OF[dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt", **(metadata or {})}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def _shards(sizes: Iterable[Tuple[str, int]], max_bytes: int) -> List[List[str]]:
    """Group names into consecutive shards of at most `max_bytes` (a bigger single tensor gets its own)."""
    shards, current, used = [], [], 0
    for name, size in sizes:
        if current and used + size > max_bytes:
            shards.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    return shards + [current] if current else shards


def save_weights_dir(directory: str, tensors: Dict[str, np.ndarray], dtype: str = "float32",
                     max_shard_size: int = 5 * 2**30) -> List[str]:
    """model.safetensors, or model-0000i-of-0000n.safetensors + index json above `max_shard_size` bytes."""
    itemsize = 4 if dtype == "float32" else 2
    sizes = [(name, array.size * itemsize) for name, array in tensors.items()]
    groups = _shards(sizes, max_shard_size)
    for stale in [n for n in os.listdir(directory) if n.endswith(".safetensors") or n == INDEX_FILE]:
        os.remove(os.path.join(directory, stale))
    if len(groups) <= 1:
        write_safetensors(os.path.join(directory, SINGLE_FILE), tensors, dtype)
        return [SINGLE_FILE]
    files, weight_map = [], {}
    for i, names in enumerate(groups, 1):
        file = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(os.path.join(directory, file), {n: tensors[n] for n in names}, dtype)
        weight_map.update({n: file for n in names})
        files.append(file)
    index = {"metadata": {"total_size": sum(size for _, size in sizes)}, "weight_map": weight_map}
    with open(os.path.join(directory, INDEX_FILE), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
    return files


def read_weights_dir(directory: str, allow_pickle: bool = False) -> Dict[str, np.ndarray]:
    """Every tensor of an HF directory: the sharded index if present, else model.safetensors.

    A directory with only PyTorch pickles (pytorch_model.bin, sharded or not) is refused unless
    `allow_pickle`, then read by the restricted unpickler (checkpoint/torch_pickle.py)."""
    index = os.path.join(directory, INDEX_FILE)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        out = {}
        for file in sorted(set(weight_map.values())):
            path = os.path.join(directory, file)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{index} lists {file}, which is missing from {directory}")
            out.update(read_safetensors(path))
        return out
    single = os.path.join(directory, SINGLE_FILE)
    if os.path.isfile(single):
        return read_safetensors(single)
    found = sorted(n for n in os.listdir(directory) if n.endswith((".bin", ".pt", ".pth")))
    if found:
        if not allow_pickle:
            refuse(os.path.join(directory, found[0]), "pretrained_model_dir")
        bin_index = os.path.join(directory, "pytorch_model.bin.index.json")
        if os.path.isfile(bin_index):
            with open(bin_index, encoding="utf-8") as f:
                found = sorted(set(json.load(f)["weight_map"].values()))
        out = {}
        for name in found:
            out.update(read_torch_weights(os.path.join(directory, name)))
        return out
    hint = ""
    raise FileNotFoundError(f"pretrained_model_dir {directory} has no {SINGLE_FILE} or {INDEX_FILE}; only "
                            f"safetensors weights are read{hint}")
