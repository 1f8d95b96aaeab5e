"""`engine=auto`: the first engine, by AUTO_RANK, that says it is available (the real vLLM
where a CUDA GPU and vllm are present, else the sim)."""

from __future__ import annotations

from kvexp import engines
from kvexp.config import Config


def choose_engine(cfg: Config) -> tuple[str, str]:
    """(engine kind, the reason for it, in words)."""
    kind = cfg.engine.kind
    if kind in engines.kinds():
        return kind, f"engine={kind} was asked for"
    ranked = sorted((e.AUTO_RANK, k) for k in engines.kinds()
                    if (e := engines.get(k)).AUTO_RANK is not None)
    not_chosen = []
    for _, k in ranked:
        ok, why = engines.get(k).available(cfg)
        if ok:
            return k, "; ".join([*not_chosen, why])
        not_chosen.append(why)
    raise RuntimeError("no engine is available: " + "; ".join(not_chosen))
