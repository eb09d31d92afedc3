"""Strata: a distributed prefix-cache tier for LLM serving (docs/client-api.md).

The client API is the compiled extension `strata._native` (lib/python/native_module.cc); this
package re-exports it and carries the engine adapters (`strata.adapters`), which import their
engine (vLLM, SGLang) only when used.
"""

from strata._native import *  # noqa: F401,F403  (the client API: Client, Namespace, ...)
from strata._native import __doc__, __version__  # noqa: F401
