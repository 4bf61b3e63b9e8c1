"""What the machine can do fast, read without importing torch (so configs can resolve ``auto``)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

#: CPU flags under which bf16 matrix products run natively; without them (e.g. AVX2-only x86), oneDNN
#: emulates bf16 and a bf16-autocast matmul is ~75x *slower* than fp32 (measured on an AVX2 EPYC).
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when this CPU computes bf16 matrix products natively (x86 AVX512-BF16 or AMX on Linux)."""
    if platform.system() != "Linux":
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(_BF16_FLAGS & set(line.split(":", 1)[-1].split()))
    return False


def cpu_precision(precision: str) -> str:
    """Resolve a CPU ``precision`` of ``auto`` to ``bf16`` where it is fast, else ``fp32``."""
    if precision != "auto":
        return precision
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def machine_line() -> str:
    """One line naming this machine for a results table: CPU model (with its x86 family and model
    numbers, which tell CPU generations apart where the name does not), cores, and bf16 support; led by
    the GPU's name when torch is already imported and sees CUDA (the device the run used)."""
    import os
    import sys

    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    bf16 = "native bf16" if cpu_has_fast_bf16() else "no native bf16"
    line = f"{name}, {os.cpu_count()} cores, {bf16}"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        line = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), host {line}"
    return line
