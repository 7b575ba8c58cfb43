"""``precision=auto``: bf16 compute only where the CPU has bf16 instructions."""

import pytest

from tasks.core import hardware


@pytest.mark.parametrize("flags,expected", [
    ({"avx2", "fma", "avx512f", "avx512_bf16"}, "mixed_bfloat16"),
    ({"avx2", "amx_bf16", "amx_tile"}, "mixed_bfloat16"),
    ({"avx2", "fma"}, "float32"),  # AVX2 only: bf16 would be emulated, slower
    (set(), "float32"),  # /proc/cpuinfo unreadable
])
def test_auto_follows_the_cpu(monkeypatch, flags, expected):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    assert hardware.resolve_precision("auto") == expected


def test_explicit_choices_are_kept_and_unknown_ones_refused():
    assert hardware.resolve_precision("float32") == "float32"
    assert hardware.resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="choose one of"):
        hardware.resolve_precision("bf16")


def test_reads_this_machines_flags():
    flags = hardware.cpu_flags()
    assert isinstance(flags, frozenset)
    assert hardware.native_bf16() == bool(flags & hardware.BF16_FLAGS)
