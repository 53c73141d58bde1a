"""Reading and writing one shard: a safetensors file holding one 2-D tensor.

The safetensors format is an 8-byte little-endian header length, a JSON
header (dtype, shape and byte offsets of each tensor) and the raw data. Both
directions handle it here, without the library's intermediate copy: a shard
is written straight from the tensor's memory while a second thread takes its
sha256, and read from disk exactly once into a buffer that the sha256 is
taken over and that the returned tensor views. The ``safetensors`` library
reads these files as it reads its own (tested).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from pathlib import Path

import numpy as np
import torch

from .._validation import shown, strict_json
from ..errors import ChecksumError, StoreError
from .atomic import atomic_write
from .manifest import check_readable

#: Name of the tensor inside every shard file.
TENSOR_NAME = "activations"

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}

#: Store dtypes a user may ask for, by the name used in manifests and flags.
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


_CODES = {dtype: code for code, dtype in _DTYPES.items()}


def write_shard(path: Path, x: torch.Tensor) -> str:
    """Write ``x`` ``[rows, units]`` atomically to ``path``; return the file's sha256."""
    x = x.detach().to("cpu").contiguous()
    data = memoryview(x.view(-1).view(torch.uint8).numpy()) if x.numel() else memoryview(b"")
    header = {
        TENSOR_NAME: {
            "dtype": _CODES[x.dtype],
            "shape": list(x.shape),
            "data_offsets": [0, data.nbytes],
        }
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)  # data starts 8-byte aligned, as safetensors does
    prefix = struct.pack("<Q", len(text)) + text
    hasher = hashlib.sha256(prefix)
    # hashlib releases the GIL on large buffers: hash while the file is written.
    hashing = threading.Thread(target=hasher.update, args=(data,))
    hashing.start()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(prefix)
            f.write(data)

    try:
        atomic_write(path, write)
    finally:
        hashing.join()
    return hasher.hexdigest()


def read_shard(
    path: Path, expected_sha256: str | None = None, buffer: np.ndarray | None = None
) -> torch.Tensor:
    """Read a shard written by :func:`write_shard`.

    Args:
        path: the shard file.
        expected_sha256: when given, the file's sha256 must match it.
        buffer: a ``uint8`` array to read into, reused across shards (fresh memory
            costs a page fault per 4 KiB, which dominates a read from the page
            cache); a new one when ``None`` or too small.

    Returns:
        The tensor ``[rows, units]``, a view of the buffer (no copy).

    Raises:
        ChecksumError: the sha256 differs from ``expected_sha256``.
        StoreError: the file is missing, truncated or not a saeatlas shard.
    """
    path = Path(path)
    check_readable(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if buffer is not None and buffer.size >= size:
                buf = buffer[:size]
            else:
                buf = np.empty(size, dtype=np.uint8)  # not zero-filled, unlike bytearray
            n_read = f.readinto(memoryview(buf))
    except FileNotFoundError as e:
        raise StoreError(
            f"Shard '{path.name}' is missing from '{path.parent}'. The store is incomplete; "
            "recapture it (or restore the file)."
        ) from e
    except OSError as e:
        raise StoreError(f"Shard '{path}' cannot be read ({e.strerror}).") from None
    if n_read != size:
        raise StoreError(f"Shard '{path}' was truncated while reading ({n_read} of {size} bytes).")
    if expected_sha256 is not None:
        actual = hashlib.sha256(buf).hexdigest()
        if actual != expected_sha256:
            raise ChecksumError(
                f"Shard '{path.name}' in '{path.parent}' is corrupt: its sha256 is {actual[:16]}…, "
                f"the manifest says {expected_sha256[:16]}…. Recapture the store (or restore the "
                "file); from Python, `ActivationStore.open(path, verify=False)` reads it anyway."
            )
    return _parse(buf, path)


def read_header(path: Path) -> tuple[torch.dtype, list[int]]:
    """The dtype and shape of the shard at ``path``, from its header alone.

    Raises:
        StoreError: the file is missing or its header is not a saeatlas shard's.
    """
    path = Path(path)
    check_readable(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n_header = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < n_header <= 100_000_000:
                raise StoreError(
                    f"Shard '{path}' is not a valid saeatlas shard: bad header length."
                )
            buf = np.frombuffer(head + f.read(n_header), dtype=np.uint8)
    except FileNotFoundError:
        raise StoreError(
            f"Shard '{path.name}' is missing from '{path.parent}'. The store is incomplete; "
            "recapture it (or restore the file)."
        ) from None
    except OSError as e:
        raise StoreError(f"Shard '{path}' cannot be read ({e.strerror}).") from None
    return _parse_header(buf, path)[:2]


def _parse_header(buf: np.ndarray, path: Path) -> tuple[torch.dtype, list[int], int, int, int]:
    def bad(why: str) -> StoreError:
        return StoreError(f"Shard '{path}' is not a valid saeatlas shard: {why}.")

    if len(buf) < 8:
        raise bad("file shorter than the safetensors header")
    (n_header,) = struct.unpack("<Q", buf[:8].tobytes())
    if n_header > len(buf) - 8:
        raise bad("header length points past the end of the file")
    try:
        # nested past Python's stack: a RecursionError traceback; a key twice: last-wins
        header = strict_json(buf[8 : 8 + n_header].tobytes().decode(), path.name)
    except ValueError as e:  # was "unreadable header (JSONDecodeError('Expecting ...'))"
        raise bad(f"its header is not JSON ({e})") from None
    if not isinstance(header, dict) or TENSOR_NAME not in header:  # was "(KeyError(...))"
        names = sorted(k for k in header if k != "__metadata__") if isinstance(header, dict) else []
        raise bad(f"it holds no tensor '{TENSOR_NAME}' (its tensors: {names[:5]})")
    info = header[TENSOR_NAME]
    try:
        dtype = _DTYPES[info["dtype"]]
        shape = [int(s) for s in info["shape"]]
        begin, end = (int(o) for o in info["data_offsets"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise bad(
            f"its tensor '{TENSOR_NAME}' is described as {shown(info)}, not by a float `dtype` "
            f"({', '.join(_DTYPES)}), a `shape` and two `data_offsets`"
        ) from None
    if len(shape) != 2 or min(shape) < 0:
        raise bad(f"tensor has shape {shape}, expected [rows, units]")
    return dtype, shape, n_header, begin, end


def _parse(buf: np.ndarray, path: Path) -> torch.Tensor:
    def bad(why: str) -> StoreError:
        return StoreError(f"Shard '{path}' is not a valid saeatlas shard: {why}.")

    dtype, shape, n_header, begin, end = _parse_header(buf, path)
    itemsize = torch.empty((), dtype=dtype).element_size()
    count = shape[0] * shape[1]
    offset = 8 + n_header + begin
    if end - begin != count * itemsize or offset + count * itemsize > len(buf):
        raise bad("data offsets do not match the tensor's shape")
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    data = buf[offset : offset + count * itemsize]
    if offset % itemsize:  # safetensors aligns data; copy if some writer did not
        data = data.copy()
    return torch.from_numpy(data).view(dtype).view(shape)
