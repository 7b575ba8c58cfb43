"""What this machine's CPU computes natively, and the training precision that follows.

``precision=auto`` trains in ``mixed_bfloat16`` (bfloat16 activations and matmuls,
float32 weights and optimizer state) only where the CPU has bfloat16 instructions
(AVX512_BF16 or AMX-BF16): there oneDNN's bf16 kernels ran the books' CNN 1.78x faster
(``bench/train.py --levers bf16``); without them bf16 is emulated and slower, so ``auto``
stays float32. The resolved name, not ``auto``, is what a run records.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

PRECISIONS = ("float32", "mixed_bfloat16", "auto")
PRECISION_HELP = ("float32; mixed_bfloat16 (bf16 compute, fp32 weights); or auto: "
                  "mixed_bfloat16 where the CPU has bf16 instructions, else float32")
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> bool:
    """Whether the CPU multiplies bfloat16 natively."""
    return bool(cpu_flags() & BF16_FLAGS)


def resolve_precision(name: str) -> str:
    """A Keras dtype policy name for ``name``: ``auto`` resolved for this CPU.

    Raises:
        ValueError: ``name`` is not one of :data:`PRECISIONS`.

    """
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose one of {PRECISIONS}")
    if name == "auto":
        return "mixed_bfloat16" if native_bf16() else "float32"
    return name
