"""kvexp's simulated engine: a vLLM-shaped server on a simulated GPU (no real device).

It serves the OpenAI subset kvexp uses, reports vLLM's metric names and keeps its
memory on a `SimDevice` shared by every sim server of a run, with either a static
KV pool (vLLM) or an elastic one (kvcached's model, including its shm segment).
"""
