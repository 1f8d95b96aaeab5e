"""kvexp: declarative experiments on vLLM's KV cache memory (kvcached vs static)."""

__version__ = "0.1.0"
