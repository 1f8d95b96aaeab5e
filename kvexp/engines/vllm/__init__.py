"""The real vLLM engine (launch.py: its command line, and whether vllm/CUDA are present)."""
