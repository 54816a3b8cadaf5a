"""Built-in adapters, selectable by name with ``--impl``.

The modules are imported only when their adapter is chosen: ``--impl=reference`` never imports
transformers.
"""

#: name -> "module:attribute" of an Adapter instance, class or zero-argument factory.
BUILTINS: dict[str, str] = {
    "reference": "gpt2_conformance.adapters.reference:ReferenceAdapter",
    "numpy": "gpt2_conformance.adapters.numpy_oracle:NumpyOracleAdapter",
    "transformers": "gpt2_conformance.adapters.transformers_gpt2:TransformersSDPAAdapter",
    "transformers-eager": "gpt2_conformance.adapters.transformers_gpt2:TransformersEagerAdapter",
    "transformers-sdpa": "gpt2_conformance.adapters.transformers_gpt2:TransformersSDPAAdapter",
}

#: Other causal-LM architectures transformers ships, as tiny random models (``hf:NAME``; see
#: :mod:`.peers` and the causal-lm requirements profile). Kept in step with ``peers.PEERS``.
PEER_NAMES: tuple[str, ...] = (
    "gpt-neo",
    "gpt-j",
    "gpt-neox",
    "opt",
    "llama",
    "qwen2",
    "qwen3",
    "mistral",
    "phi",
    "gemma",
    "bloom",
    "falcon",
    "gpt-bigcode",
)
BUILTINS.update(
    {f"hf:{n}": f"gpt2_conformance.adapters.peers:{n.replace('-', '_')}" for n in PEER_NAMES}
)
