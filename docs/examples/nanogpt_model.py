"""A small nanoGPT-style GPT-2 in PyTorch: the kind of model a user brings to the suite.

It is written the way many training codebases write GPT-2: ``nn.Linear`` projections (weights
stored ``[out, in]``, unlike GPT-2's canonical Conv1D ``[in, out]``), the head tied to the token
embedding by sharing the Parameter, and a loss over targets that are *already shifted* by the
data loader (``targets[:, i]`` is the token after ``idx[:, i]``). It does not validate input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, d: int, n_head: int, eps: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(d, eps=eps)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(d, 3 * d)  # q, k, v side by side
        self.attn.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=eps)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(d, 4 * d)
        self.mlp.c_proj = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, d] -> [B, T, d]
        B, T, d = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(d, dim=-1)
        q, k, v = (t.view(B, T, self.n_head, d // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, d/H]
        x = x + self.attn.c_proj(y.transpose(1, 2).reshape(B, T, d))
        h = F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh")
        return x + self.mlp.c_proj(h)


class NanoGPT(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, d: int, n_layer: int, n_head: int):
        super().__init__()
        eps = 1e-5
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(vocab_size, d),
                "wpe": nn.Embedding(block_size, d),
                "h": nn.ModuleList(Block(d, n_head, eps) for _ in range(n_layer)),
                "ln_f": nn.LayerNorm(d, eps=eps),
            }
        )
        self.lm_head = nn.Linear(d, vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying: one Parameter
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections, scaled (GPT-2 paper)
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))
            elif p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        T = idx.shape[1]
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(T, device=idx.device))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))  # [B, T, V]
        loss = None
        if targets is not None:  # already shifted: row i against targets[:, i]
            flat = logits.flatten(0, 1), targets.flatten()
            loss = F.cross_entropy(*flat, ignore_index=-1, reduction=reduction)
        return logits, loss
