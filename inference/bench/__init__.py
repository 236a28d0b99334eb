"""Benchmarks of the runtime against llama.cpp and transformers on the same files and threads."""
