"""Run smolchat's Triton kernels in Triton's CPU interpreter (``TRITON_INTERPRET=1``).

Import this module *before* ``smolchat.engine.kernels`` in a process of its own (the variable
is read when the kernels are decorated). It also works around an interpreter bug with numpy
>= 2.4 (``int()`` of a one-element array in ``range`` bounds).
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import numpy as np  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

_orig = interpreter._patch_lang_tensor


def _patched(tensor, scope) -> None:
    _orig(tensor, scope)
    scope.set_attr(
        tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0])
    )


interpreter._patch_lang_tensor = _patched


def _cast(self, src, dst_type):
    import torch
    import triton.language as tl

    if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
        t = torch.from_numpy(np.ascontiguousarray(src.data).view(np.float32))
        data = t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        return interpreter.TensorHandle(data, dst_type.scalar)
    return _orig_cast(self, src, dst_type)


_orig_cast = interpreter.InterpreterBuilder.cast_impl
interpreter.InterpreterBuilder.cast_impl = _cast
