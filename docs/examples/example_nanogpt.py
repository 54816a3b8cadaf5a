"""Adapter for the nanoGPT-style model of nanogpt_model.py: a torch nn.Module in a few lines.

Run the suite on it: ``pytest --pyargs gpt2_conformance --impl=example_nanogpt:adapter``.
"""

from nanogpt_model import NanoGPT

from gpt2_conformance.adapters.torch_module import TorchModuleAdapter
from gpt2_reference.checkpoint import CONV1D_SUFFIXES


class NanoGPTAdapter(TorchModuleAdapter):
    name = "nanogpt-style"
    label_convention = "shifted"  # the model's targets are already shifted

    def make_module(self, config, seed):
        c = config
        return NanoGPT(c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head)

    def forward_logits(self, module, input_ids):
        return module(input_ids)[0]

    def forward_loss(self, module, input_ids, labels, reduction, ignore_index):
        targets = labels.masked_fill(labels == ignore_index, -1)  # the model ignores -1
        return module(input_ids, targets, reduction=reduction)[1]

    def canonical_state_dict(self, module):
        # Same names as GPT-2; nn.Linear stores [out, in], the canonical Conv1D layout [in, out].
        return {
            name: p.t() if name.endswith(CONV1D_SUFFIXES) else p
            for name, p in module.named_parameters()
        }

    def head_weight(self, module):
        return module.lm_head.weight


adapter = NanoGPTAdapter()
