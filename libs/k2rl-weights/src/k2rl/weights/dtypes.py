"""torch dtype <-> wire names (``k2rl.common.v1.TensorDtype``), and element sizes.

The wire enum's names follow torch's (``torch.bfloat16`` -> ``TENSOR_DTYPE_BFLOAT16``), so the
mapping is by name and a dtype the enum lacks fails loudly instead of being coerced.
"""

from __future__ import annotations

import torch

SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (
    torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.float8_e4m3fn,
    torch.float8_e5m2, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
)
_BY_NAME = {str(d).removeprefix("torch."): d for d in SUPPORTED_DTYPES}


def dtype_name(dtype: torch.dtype) -> str:
    """Short name, e.g. ``"bfloat16"``; ValueError for a dtype weights cannot carry."""
    name = str(dtype).removeprefix("torch.")
    if name not in _BY_NAME:
        raise ValueError(f"dtype {dtype} cannot be carried in a weight bucket; supported: {', '.join(_BY_NAME)}")
    return name


def dtype_from_name(name: str) -> torch.dtype:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; supported: {', '.join(_BY_NAME)}") from None


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
