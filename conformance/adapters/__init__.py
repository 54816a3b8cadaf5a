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
