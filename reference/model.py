"""A minimal, readable, fast PyTorch GPT-2: the project's reference implementation of the spec.

Parameters carry GPT-2's canonical checkpoint names and layouts (spec chapter 1), so
``model.state_dict()`` *is* a canonical checkpoint: no renaming, no transposing. The output head
is the token-embedding matrix itself (weight tying, chapter 5); there is no ``lm_head`` module.

Declared conventions (chapters 2 and 4): ``labels`` are the input ids and are shifted inside
(transformers' convention); ``targets`` are already shifted (nanoGPT's). Padding goes on the left,
with an ``attention_mask`` and mask-derived ``position_ids``. There is no dropout: the model
computes GPT-2's function, the same in training and in evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpt2_spec import ConfigError, GPT2Config, InvalidInputError

IGNORE_INDEX = -100
#: The most blocks the reference builds: each is a module built and initialised one by one, so
#: an n_layer of a million (a typo, a corrupt config) would take minutes before failing.
MAX_LAYERS = 1024
KVCache = tuple[tuple[Tensor, Tensor], ...]  # per layer (key, value), each [B, H, S, head_dim]


@dataclasses.dataclass
class GPT2Output:
    """What :meth:`GPT2.forward` returns.

    Attributes:
        logits: [B, T, V] raw scores; row i predicts token i+1 ([B, 1, V] with ``last_only``).
        loss: a float32 scalar (float64 for a float64 model), or None without labels/targets.
        past_key_values: the cache to pass to the next call (with ``use_cache=True``), else None.
        hidden_states: [B, T, d] the final hidden states, after ``ln_f``, before the head.
    """

    logits: Tensor
    loss: Tensor | None = None
    past_key_values: KVCache | None = None
    hidden_states: Tensor | None = None


class Conv1D(nn.Module):
    """An affine map stored the way GPT-2 stores it: weight [in, out], applied as ``x @ W + b``.

    (``nn.Linear`` stores [out, in]; GPT-2's layout lets checkpoints load without transposing.)
    """

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: Tensor) -> Tensor:  # [..., in] -> [..., out]
        out = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)  # one fused GEMM
        return out.view(*x.shape[:-1], out.shape[-1])


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; q, k, v are the three d-wide column blocks of c_attn."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = Conv1D(config.n_embd, 3 * config.n_embd)
        self.c_proj = Conv1D(config.n_embd, config.n_embd)

    def forward(
        self, x: Tensor, mask: Tensor | None, is_causal: bool, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        B, T, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)  # [B, T, 3d] -> 3 x [B, T, d]
        # Heads are contiguous head_dim-wide slices: [B, T, d] -> [B, H, T, head_dim], no copy.
        q, k, v = (t.view(B, T, self.n_head, d // self.n_head).transpose(1, 2) for t in (q, k, v))
        if past is not None:  # cached keys and values come first: [B, H, P+T, head_dim]
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
        # softmax(q kᵀ / sqrt(head_dim) + mask) v, in one fused kernel.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        y = y.transpose(1, 2).reshape(B, T, d)  # heads side by side again: [B, T, d]
        return self.c_proj(y), (k, v)


class MLP(nn.Module):
    """Position-wise feed-forward network of width 4d."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.c_fc = Conv1D(config.n_embd, 4 * config.n_embd)
        self.c_proj = Conv1D(4 * config.n_embd, config.n_embd)

    def forward(self, x: Tensor) -> Tensor:  # [B, T, d] -> [B, T, 4d] -> [B, T, d]
        # GPT-2 was trained with the tanh approximation of GELU; exact (erf) GELU deviates.
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    """A pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(
        self, x: Tensor, mask: Tensor | None, is_causal: bool, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        a, present = self.attn(self.ln_1(x), mask, is_causal, past)
        x = x + a
        return x + self.mlp(self.ln_2(x)), present


class _Trunk(nn.ModuleDict):
    """``transformer.*``: a ModuleDict whose entries a type checker can see."""

    wte: nn.Embedding
    wpe: nn.Embedding
    h: nn.ModuleList
    ln_f: nn.LayerNorm


def causal_lm_loss(
    logits: Tensor, targets: Tensor, reduction: str = "mean", ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Cross-entropy of logits [B, T, V] against already-shifted targets [B, T], computed in at
    least float32 (bf16/fp16 logits are upcast first; float64 stays float64).

    "sum" adds one term per counted target; "mean" divides that sum by the number of counted
    targets of the whole batch (so micro-batch sums and counts add up). With no counted target
    the sum is 0 and the mean is 0/0 = NaN (spec objective.no-counted-targets).
    """
    total = F.cross_entropy(
        logits.flatten(0, -2).to(torch.promote_types(logits.dtype, torch.float32)),
        targets.flatten(),
        reduction="sum",
        ignore_index=ignore_index,
    )
    return total if reduction == "sum" else total / (targets != ignore_index).sum()


class GPT2(nn.Module):
    """GPT-2 with canonical parameter names and a tied head.

    Args:
        config: the hyper-parameters.
        seed: makes the initialisation reproducible (a private ``torch.Generator``); None draws
            from torch's global random state.
    """

    def __init__(self, config: GPT2Config, *, seed: int | None = None) -> None:
        super().__init__()
        _check_size(config)
        self.config = config
        d = config.n_embd
        self.transformer = _Trunk(
            dict(
                wte=nn.Embedding(config.vocab_size, d),  # [V, d]; also the head (head_weight)
                wpe=nn.Embedding(config.n_positions, d),  # [n_ctx, d]
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(d, eps=config.layer_norm_epsilon),
            )
        )
        self.reset_parameters(seed=seed)

    @torch.no_grad()
    def reset_parameters(self, *, seed: int | None = None) -> None:
        """GPT-2's initialisation: weights N(0, 0.02²), wpe N(0, 0.01²) as in OpenAI's code,
        residual projections (c_proj) N(0, (0.02/sqrt(2L))²) as in the GPT-2 paper (so the
        residual stream does not grow with depth), biases 0, LayerNorm gains 1."""
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        proj_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
            elif p.ndim == 1:  # LayerNorm gains
                p.fill_(1.0)
            else:
                std = 0.01 if "wpe" in name else proj_std if "c_proj" in name else 0.02
                # Drawn on the CPU in float32, so a seed gives the same weights on any device.
                p.copy_(torch.empty(p.shape).normal_(0.0, std, generator=generator))

    @property
    def head_weight(self) -> Tensor:
        """The head's matrix W [V, d]: the token-embedding Parameter itself, not a copy.

        Weight tying (Press & Wolf 2017; OpenAI's model.py multiplies by wte transposed): the
        logits are h @ Wᵀ. One tensor means one gradient (lookup plus head contributions), and
        the tie survives optimiser steps, dtype/device moves and vocabulary resizes by design.
        """
        return self.transformer.wte.weight

    def num_parameters(self) -> int:
        """Number of trainable scalars (the tied matrix counted once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        input_ids: Tensor,
        *,
        labels: Tensor | None = None,
        targets: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        last_only: bool = False,
        reduction: str = "mean",
        ignore_index: int = IGNORE_INDEX,
    ) -> GPT2Output:
        """Run GPT-2 on token ids [B, T]. Every input is validated first (spec chapter 8).

        Args:
            input_ids: [B, T] integer token ids in [0, V).
            labels: [B, T] the input ids (or ignore_index), shifted inside: row i is scored
                against labels[:, i+1] and the last row has no target.
            targets: [B, T] already shifted: row i is scored against targets[:, i].
            attention_mask: [B, P+T] of 0/1 over cached and new positions; 0 marks padding,
                which no query attends to (a padding query attends to itself only).
            position_ids: [B, T], [1, T] or [T] in [0, n_ctx); default P, ..., P+T-1. With
                left padding pass ``(attention_mask.cumsum(-1) - 1).clamp(min=0)``.
            past_key_values: the cache of P positions returned by an earlier call.
            use_cache: return the cache extended by these T positions.
            last_only: compute the head on the last position only (next-token inference).
            reduction: "mean" (over all counted targets of the batch) or "sum".
            ignore_index: the label/target value that contributes no loss term.
        """
        P = self._validate(
            input_ids, labels, targets, attention_mask, position_ids, past_key_values,
            last_only, reduction, ignore_index,
        )  # fmt: skip
        T = input_ids.shape[1]
        if position_ids is None:  # positions continue after the cache: P, P+1, ...
            position_ids = torch.arange(P, P + T, device=input_ids.device)  # [T]
        tr = self.transformer
        x = tr.wte(input_ids.long()) + tr.wpe(position_ids.long())  # [B, T, d]

        mask, is_causal = _attention_mask(attention_mask, T, P, input_ids.device)
        presents = []
        for i, block in enumerate(tr.h):
            past = None if past_key_values is None else past_key_values[i]
            x, kv = block(x, mask, is_causal, past)
            if use_cache:
                presents.append(kv)
            del kv  # k, v are views of the block's [B, T, 3d] qkv output: let it go now
        h = tr.ln_f(x)  # [B, T, d]
        del x  # nor is the residual stream needed while the head's [B, T, V] logits are made

        # The tied head: logits = h @ Wᵀ with W = wte stored [V, d]; no bias, no scale.
        logits = F.linear(h[:, -1:] if last_only else h, self.head_weight)  # [B, T or 1, V]
        loss = None
        if labels is not None:  # shift once: row i against label i+1, the last row against none
            targets = F.pad(labels[:, 1:], (0, 1), value=ignore_index)
        if targets is not None:
            loss = causal_lm_loss(logits, targets.long(), reduction, ignore_index)
        return GPT2Output(logits, loss, tuple(presents) if use_cache else None, h)

    @torch.no_grad()
    def generate(self, input_ids: Tensor, max_new_tokens: int) -> Tensor:
        """Greedy decoding with the key/value cache: [B, T] -> [B, T + max_new_tokens].

        After the prompt, each step feeds only the newest token; the cache holds the rest.
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise InvalidInputError(
                f"max_new_tokens must be an int, got {type(max_new_tokens).__name__}"
            )
        if max_new_tokens < 0:
            raise InvalidInputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        _check_tensor("input_ids", input_ids)
        n_ctx = self.config.n_positions
        T = input_ids.shape[-1] if input_ids.ndim else 0
        read = T + max_new_tokens - 1  # every token but the last generated one is fed back
        if max_new_tokens > 0 and read > n_ctx:  # refused before any token is generated
            raise InvalidInputError(
                f"generate: {T} prompt tokens and {max_new_tokens} new tokens need {read} "
                f"positions (the last new token is not fed back), more than n_positions={n_ctx}; "
                f"ask for at most {max(n_ctx - T + 1, 0)} new tokens, or keep only the prompt's "
                f"last {max(n_ctx - max_new_tokens + 1, 0)} tokens"
            )
        pieces, new, past = [input_ids], input_ids, None
        for _ in range(max_new_tokens):
            out = self(new, past_key_values=past, use_cache=True, last_only=True)
            new = out.logits[:, -1].argmax(dim=-1, keepdim=True)  # [B, 1]
            past = out.past_key_values
            pieces.append(new)
        return torch.cat(pieces, dim=1)

    @torch.no_grad()
    def resize_token_embeddings(self, new_vocab_size: int, *, seed: int | None = None) -> None:
        """Change V: keep the first min(old, new) rows; draw added rows from N(0, 0.02²).

        The head stays tied, since it *is* the new embedding matrix. An optimiser built before
        the resize still holds the old tensor: build it afterwards.
        """
        config = dataclasses.replace(self.config, vocab_size=new_vocab_size)  # validates V
        old = self.transformer.wte.weight
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        weight = torch.empty(new_vocab_size, old.shape[1]).normal_(0.0, 0.02, generator=generator)
        weight = weight.to(old)  # the old dtype and device
        keep = min(old.shape[0], new_vocab_size)
        weight[:keep] = old[:keep]
        self.transformer.wte = nn.Embedding.from_pretrained(weight, freeze=False)
        self.config = config

    @classmethod
    def from_pretrained(cls, path: str | Path, config: GPT2Config | None = None) -> GPT2:
        """Load a canonical checkpoint (transformers' layout) with :mod:`.checkpoint`."""
        from .checkpoint import load_checkpoint

        config, state_dict = load_checkpoint(path, config)
        model = cls(config)
        model.load_state_dict(state_dict, strict=True)  # every canonical name, nothing else
        return model

    def save_pretrained(self, directory: str | Path) -> None:
        """Write a canonical checkpoint (loadable by transformers' GPT2LMHeadModel)."""
        from .checkpoint import save_checkpoint

        save_checkpoint(directory, self.config, self.state_dict())

    def _validate(
        self,
        input_ids: Tensor,
        labels: Tensor | None,
        targets: Tensor | None,
        attention_mask: Tensor | None,
        position_ids: Tensor | None,
        past_key_values: KVCache | None,
        last_only: bool,
        reduction: str,
        ignore_index: int,
    ) -> int:
        """Refuse invalid input before any computation (spec input.*); return the cache length."""
        V, n_ctx = self.config.vocab_size, self.config.n_positions
        _check_integer("input_ids", input_ids)
        if input_ids.ndim != 2:
            hint = "; add a batch dimension: input_ids[None]" if input_ids.ndim == 1 else ""
            raise InvalidInputError(
                f"input_ids must be 2-D [batch, seq], got shape {tuple(input_ids.shape)}{hint}"
            )
        B, T = input_ids.shape
        if B == 0 or T == 0:
            raise InvalidInputError(
                f"input_ids is empty (shape {(B, T)}): give at least one sequence of one token"
            )
        if reduction not in ("mean", "sum"):
            raise InvalidInputError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if labels is not None and targets is not None:
            raise InvalidInputError(
                "pass labels (the input ids, shifted inside) or targets (already shifted), "
                "not both: shifting twice trains on token i+2"
            )
        P = self._check_cache(past_key_values, B)
        if n_ctx < P + T:
            raise InvalidInputError(
                f"context too long: {P} cached + {T} new positions = {P + T} > n_positions="
                f"{n_ctx}; keep the last {n_ctx - P} tokens, or start a new cache"
            )
        name, lab = ("labels", labels) if labels is not None else ("targets", targets)
        if lab is not None:
            _check_integer(name, lab)
            if lab.shape != input_ids.shape:
                raise InvalidInputError(
                    f"{name} shape {tuple(lab.shape)} differs from input_ids shape {(B, T)}; "
                    f"give one value per input position (ignore_index where there is no target)"
                )
            if 0 <= ignore_index < V:
                raise InvalidInputError(
                    f"ignore_index={ignore_index} is a valid token id in [0, {V}): that token "
                    f"would never be scored; use a negative ignore_index (default {IGNORE_INDEX})"
                )
            if last_only:
                raise InvalidInputError(
                    f"last_only=True computes the last row only, but a loss over {name} needs "
                    "every row: drop last_only when computing a loss"
                )
        if attention_mask is not None:
            _check_tensor("attention_mask", attention_mask)
            if attention_mask.shape != (B, P + T):
                raise InvalidInputError(
                    f"attention_mask must have shape [batch, cached + new] = {(B, P + T)}, got "
                    f"{tuple(attention_mask.shape)}; it covers the cached positions too"
                )
        if position_ids is not None:
            _check_integer("position_ids", position_ids)
            if position_ids.shape not in ((B, T), (1, T), (T,)):
                raise InvalidInputError(
                    f"position_ids must have shape {(B, T)}, {(1, T)} or {(T,)}, "
                    f"got {tuple(position_ids.shape)}"
                )

        # Values are checked on the device and the flags read back together: one host sync.
        checks = {"input_ids": (input_ids, _outside(input_ids, V))}
        if lab is not None:
            checks[name] = (lab, _outside(lab, V) & (lab != ignore_index))
        if attention_mask is not None:
            checks["attention_mask"] = (
                attention_mask,
                (attention_mask != 0) & (attention_mask != 1),
            )
        if position_ids is not None:
            checks["position_ids"] = (position_ids, _outside(position_ids, n_ctx))
        found = torch.stack([bad.any() for _, bad in checks.values()]).tolist()
        for (what, (values, bad)), failed in zip(checks.items(), found, strict=True):
            if failed:  # the offending value costs a second sync, on the error path only
                rule = _VALUE_RULES[what].format(V=V, n_ctx=n_ctx, ignore_index=ignore_index)
                raise InvalidInputError(f"{what} holds {values[bad][0].item()}, {rule}")
        return P

    def _check_cache(self, past: KVCache | None, B: int) -> int:
        """Check a cache's structure; return its length P (0 without a cache)."""
        if past is None:
            return 0
        L, H, hd = self.config.n_layer, self.config.n_head, self.config.head_dim
        shapes = sorted({tuple(t.shape) for kv in past for t in kv})  # one [B, H, P, hd] for all
        b, h, P, d = shapes[0] if len(shapes) == 1 and len(shapes[0]) == 4 else (-1, -1, -1, -1)
        if len(past) != L or any(len(kv) != 2 for kv in past) or (b, h, d) != (B, H, hd):
            raise InvalidInputError(
                f"past_key_values must hold {L} layers of (key, value), each of shape [B, H, P, "
                f"head_dim] = [{B}, {H}, P, {hd}], got {len(past)} layers of shapes {shapes}; "
                "pass the past_key_values that a call with use_cache=True returned"
            )
        return P


def _attention_mask(
    attention_mask: Tensor | None, T: int, P: int, device: torch.device
) -> tuple[Tensor | None, bool]:
    """The boolean SDPA mask [B or 1, 1, T, P+T] (True = may attend) and SDPA's is_causal flag.

    ``is_causal=True`` aligns the triangle to the top-left corner, which is wrong once there is a
    cache (query i sits at absolute position P+i; spec inference.cache-positions), so it is used
    only when P = 0 and nothing is padded.
    """
    if attention_mask is None and P == 0:
        return None, True
    if attention_mask is None and T == 1:  # a single new token sees the whole cache
        return None, False
    q_pos = torch.arange(P, P + T, device=device)[:, None]  # [T, 1] absolute positions
    k_pos = torch.arange(P + T, device=device)  # [P+T]
    allowed = k_pos <= q_pos  # [T, P+T]: query i sees keys 0..P+i (bottom-right aligned)
    if attention_mask is None:
        return allowed[None, None], False
    real = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, P+T]
    return (allowed & real) | (k_pos == q_pos), False  # a padding query sees itself only


_VALUE_RULES = {
    "input_ids": "outside [0, vocab_size={V}); ids index the vocabulary: does the tokenizer match?",
    "labels": "outside [0, {V}) and not ignore_index={ignore_index}; mark positions without a "
    "target with ignore_index",
    "targets": "outside [0, {V}) and not ignore_index={ignore_index}; mark positions without a "
    "target with ignore_index",
    "attention_mask": "not 0 or 1; use 1 for real tokens and 0 for padding",
    "position_ids": "outside [0, n_positions={n_ctx}); with left padding use "
    "(attention_mask.cumsum(-1) - 1).clamp(min=0)",
}


def _memory_bytes() -> int | None:
    """The machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _check_size(config: GPT2Config) -> None:
    """Refuse, before allocating anything, a configuration whose float32 weights alone would not
    fit in this machine's memory (a typo such as n_layer=1000000 would otherwise allocate, and
    initialise, until the process is killed)."""
    if not isinstance(config, GPT2Config):
        raise ConfigError(f"GPT2 needs a gpt2_spec.GPT2Config, got {type(config).__name__}")
    if config.n_layer > MAX_LAYERS:
        raise ConfigError(
            f"{config}: n_layer={config.n_layer} is more blocks than the reference builds (at "
            f"most {MAX_LAYERS}; GPT-2 XL has 48): check the configuration"
        )
    count = config.parameter_count
    memory = _memory_bytes()
    if memory is not None and 4 * count > memory:
        raise ConfigError(
            f"{config} has {count:,} parameters, {4 * count / 2**30:,.1f} GiB in float32, more "
            f"than this machine's {memory / 2**30:,.1f} GiB of memory: check the sizes (GPT-2 "
            "small: GPT2Config.gpt2_small(), 124M parameters)"
        )


def _check_tensor(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):  # a list or an array: say so instead of an AttributeError
        raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def _check_integer(name: str, x: Tensor) -> None:
    """Refuse anything but an integer tensor: ids and positions are indices, not quantities."""
    _check_tensor(name, x)
    if x.dtype == torch.bool or x.is_floating_point() or x.is_complex():
        raise InvalidInputError(
            f"{name} must have an integer dtype, got {x.dtype}; build ids and positions with "
            "dtype=torch.long"
        )


def _outside(x: Tensor, n: int) -> Tensor:  # bool, same shape as x: entries outside [0, n)
    return (x < 0) | (x >= n)
