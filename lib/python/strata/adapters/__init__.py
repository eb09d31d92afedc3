"""Engine adapters: each module imports its engine (vLLM, SGLang) when loaded, never before.

docs/engines.md lists the adapters, how an engine loads them and the engine versions tested.
"""
