"""A transformers-style causal LM in a few lines: transformers' own GPT2LMHeadModel here.

Run the suite on it: ``pytest --pyargs gpt2_conformance --impl=example_hf:adapter``.
"""

import transformers

from gpt2_conformance.adapters.hf import hf_causal_lm


def make_gpt2(config, seed):  # the suite's GPT2Config -> a model (float32, CPU, random weights)
    hf = transformers.GPT2Config(**config.to_hf_dict(), bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(hf)


# Its parameter names are GPT-2's canonical names, so it can take the oracle's weights.
adapter = hf_causal_lm(make_gpt2, name="hf-gpt2", param_names=lambda name: name)
