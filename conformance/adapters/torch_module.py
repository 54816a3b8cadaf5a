"""A base class that turns a PyTorch ``nn.Module`` GPT-2 into an adapter in a few lines.

Subclass :class:`TorchModuleAdapter` and provide two *hooks*: how to build the module
(:meth:`~TorchModuleAdapter.make_module`) and how to get its logits
(:meth:`~TorchModuleAdapter.forward_logits`). The base does the rest: NumPy to torch and back,
the device and dtype, ``no_grad``, gradients through autograd, the SGD step, moves, saving and
loading. Each optional hook you provide adds the capabilities it makes possible, and the adapter's
:attr:`~gpt2_conformance.adapter.Adapter.capabilities` are derived from them:

============================================  ================================================
hook (or attribute)                           capabilities it adds
============================================  ================================================
``make_module``, ``forward_logits``           (required) ``move``, ``save-load``
``forward_logits(..., attention_mask=,        ``attention-mask``
position_ids=)`` accepting both keywords
``forward_loss``                              ``loss``, ``train-step``; with canonical weights
                                              (below) also ``gradients``
``forward_hidden``                            ``hidden-states``
``forward_last``                              ``last-position``
``forward_cached``                            ``kv-cache``
``canonical_name`` / ``param_names`` /        ``params``, ``checkpoint``
``canonical_state_dict``
``resize_module_vocab``                       ``resize-vocab``
``input_embedding_module``                    ``embedding-matrix``; with ``forward_loss`` also
                                              ``embedding-gradients``
``validates_input = True``                    ``input-validation``
============================================  ================================================

A subclass that sets ``capabilities`` in its class body keeps exactly what it sets. Other hooks
have defaults that fit most modules: ``head_weight`` (``get_output_embeddings().weight``),
``save_module``/``load_module`` (the state dict in safetensors, and ``config.json``),
``load_checkpoint_module`` (:mod:`gpt2_reference.checkpoint`, then ``load_canonical``).

Canonical weights. The suite speaks GPT-2's canonical names and layout
(``transformer.h.0.attn.c_attn.weight`` stored ``[in, out]``; see
:mod:`gpt2_reference.checkpoint`). If the module's own parameter names are the canonical ones,
override ``canonical_name`` to return its argument; if they differ only by name, set
``param_names`` (own name -> canonical name); if the layout differs too (``nn.Linear`` stores
``[out, in]``), override ``canonical_state_dict`` to return *views* of the parameters in the
canonical layout (``p.t()``). Writing into those views writes the parameters, so
``load_canonical`` needs overriding only when a canonical tensor is not a view (say, ``c_attn``
assembled from separate q, k and v projections with ``torch.cat``). Gradients are mapped to
canonical names by the same ``canonical_state_dict``, applied to the gradients.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gpt2_spec import GPT2Config, InvalidInputError, spec_definitions

from ..adapter import Adapter, AdapterError, Cache, Implementation, Params, Reduction

__all__ = ["DTYPES", "TorchModuleAdapter", "TorchModuleImplementation", "derive_capabilities"]

#: The suite's dtype names (and float64, for moves) as torch dtypes.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}

IGNORE_INDEX = int(spec_definitions().IGNORE_INDEX)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# Optional hook -> the capabilities that providing it adds.
_HOOK_CAPABILITIES: dict[str, tuple[str, ...]] = {
    "forward_loss": ("loss", "train-step"),
    "forward_hidden": ("hidden-states",),
    "forward_last": ("last-position",),
    "forward_cached": ("kv-cache",),
    "resize_module_vocab": ("resize-vocab",),
    "input_embedding_module": ("embedding-matrix",),
}
_PARAMS_HOOKS = ("canonical_name", "canonical_state_dict")


def _torch_dtype(dtype: str) -> torch.dtype:
    try:
        return DTYPES[dtype]
    except KeyError:
        raise AdapterError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}") from None


class TorchModuleAdapter(Adapter):
    """Base adapter for a GPT-2 written as a torch ``nn.Module`` (see the module docstring).

    Class attributes, besides those of :class:`~gpt2_conformance.adapter.Adapter`:

    * ``param_names``: own parameter name -> canonical name (a Mapping; or, set on an
      instance, a function returning None for a weight that is not GPT-2's), for modules whose
      names differ from the canonical ones only by name. None: use the hooks instead.
    * ``validates_input``: the module refuses invalid input with a ``ValueError`` before
      computing (claims ``input-validation``).
    """

    devices: Sequence[str] = ("cpu", "cuda")
    dtypes: Sequence[str] = ("float32", "bfloat16", "float16")
    param_names: Mapping[str, str] | Callable[[str], str | None] | None = None
    validates_input: bool = False

    _capabilities_declared = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "capabilities" in cls.__dict__:  # set in the class body: kept, and inherited
            cls._capabilities_declared = True
        elif not cls._capabilities_declared:
            cls.capabilities = derive_capabilities(cls)

    # ---- required hooks -------------------------------------------------------------------

    def make_module(self, config: GPT2Config, seed: int) -> nn.Module:
        """A new module for ``config`` initialised deterministically from ``seed`` (float32,
        on the CPU; the base moves it). The global CPU generator of torch is seeded with ``seed``
        first, and restored afterwards."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_module")

    def forward_logits(self, module: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` int64 ids -> ``[B, T, V]`` logits.

        Add keyword parameters ``attention_mask=None, position_ids=None`` (``[B, T]`` each) to
        claim ``attention-mask``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward_logits")

    # ---- optional hooks (each one adds capabilities) ----------------------------------------

    def forward_loss(
        self,
        module: nn.Module,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        reduction: Reduction,
        ignore_index: int,
    ) -> torch.Tensor:
        """The scalar loss, differentiable; ``labels`` in the adapter's label convention."""
        raise NotImplementedError

    def forward_hidden(self, module: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, T] -> [B, T, d]``: the final hidden states, after ``ln_f``, before the head."""
        raise NotImplementedError

    def forward_last(self, module: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, T] -> [B, V]``: the next-token logits, computed for the last position only."""
        raise NotImplementedError

    def forward_cached(
        self, module: nn.Module, input_ids: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, Any]:
        """Run ``input_ids`` after the cache ``state`` (None: empty cache).

        Returns ``(logits of the new tokens [B, T, V], the extended state)``. The state handed
        in must stay valid: the suite may extend one cache twice.
        """
        raise NotImplementedError

    def canonical_name(self, name: str) -> str | None:
        """The canonical name of the module's parameter ``name`` (None: not a GPT-2 weight).

        The default reads ``param_names``; override with ``return name`` when the module's
        names are already the canonical ones.
        """
        names = self.param_names
        if names is None:
            raise NotImplementedError
        return names(name) if callable(names) else names.get(name)

    def canonical_state_dict(self, module: nn.Module) -> Mapping[str, torch.Tensor]:
        """The module's weights by canonical name, in the canonical layout, as views.

        Default: the parameters renamed by :meth:`canonical_name`. Override to change the
        layout; return views (``p.t()``, not ``p.t().clone()``) so that loading can write
        through them, or override :meth:`load_canonical` too.
        """
        result: dict[str, torch.Tensor] = {}
        for name, parameter in module.named_parameters():
            canonical = self.canonical_name(name)
            if canonical is not None:
                result[canonical] = parameter
        return result

    def load_canonical(self, module: nn.Module, params: Mapping[str, torch.Tensor]) -> None:
        """Overwrite some of the module's weights with canonical ones (under ``no_grad``).

        Default: copy into the views of :meth:`canonical_state_dict`.
        """
        views = self.canonical_state_dict(module)
        unknown = sorted(set(params) - set(views))
        if unknown:
            raise AdapterError(
                f"{type(self).__name__}: the module has no canonical weight named {unknown[:5]} "
                f"(it has {sorted(views)[:5]}...); check canonical_name / canonical_state_dict"
            )
        storages = {p.untyped_storage().data_ptr() for p in module.parameters()}
        for name, value in params.items():
            view = views[name]
            if view.untyped_storage().data_ptr() not in storages:
                raise AdapterError(
                    f"{type(self).__name__}.canonical_state_dict returned {name!r} as a copy, "
                    "not a view of a parameter: return views, or override load_canonical"
                )
            if tuple(view.shape) != tuple(value.shape):
                raise AdapterError(
                    f"canonical weight {name!r} has shape {tuple(value.shape)} but the module's "
                    f"has {tuple(view.shape)} in canonical_state_dict"
                )
            view.copy_(value)

    def head_weight(self, module: nn.Module) -> torch.Tensor:
        """The ``[V, d]`` matrix the head multiplies by (transposed).

        Default: ``module.get_output_embeddings().weight`` (the transformers convention).
        """
        get = getattr(module, "get_output_embeddings", None)
        head = get() if callable(get) else None
        if head is None:
            raise NotImplementedError(
                f"{type(self).__name__}: override head_weight(module) to return the head matrix"
            )
        weight: torch.Tensor = head.weight
        return weight

    def resize_module_vocab(self, module: nn.Module, vocab_size: int) -> None:
        """Grow (or shrink) the vocabulary in place, keeping the old rows."""
        raise NotImplementedError

    def input_embedding_module(self, module: nn.Module) -> nn.Module:
        """The module that looks the token ids up (its ``weight`` is ``[V, d]``; it is called
        once per forward with the ids)."""
        raise NotImplementedError

    def save_module(self, module: nn.Module, config: GPT2Config, directory: Path) -> None:
        """Write the module's own checkpoint. Default: ``model.safetensors`` (shared tensors
        saved once) and ``config.json``."""
        from safetensors.torch import save_model

        directory.mkdir(parents=True, exist_ok=True)
        save_model(module, str(directory / WEIGHTS_FILE))
        (directory / CONFIG_FILE).write_text(json.dumps(config.to_hf_dict(), indent=2) + "\n")

    def load_module(self, directory: Path, config: GPT2Config, template: nn.Module) -> nn.Module:
        """Read what :meth:`save_module` wrote (``template`` is the module that saved it)."""
        from safetensors.torch import load_model

        module = self._new_module(config, 0)
        load_model(module, str(directory / WEIGHTS_FILE), strict=True)
        return module

    def load_checkpoint_module(
        self, path: Path, config: GPT2Config
    ) -> tuple[nn.Module, GPT2Config]:
        """A module from a canonical GPT-2 checkpoint (directory or weights file).

        Default: :func:`gpt2_reference.checkpoint.load_checkpoint` then :meth:`load_canonical`.
        A bare weights file carries no config: ``config`` (the implementation's) is used.
        """
        from gpt2_reference.checkpoint import load_checkpoint

        config, state = load_checkpoint(path, None if Path(path).is_dir() else config)
        module = self._new_module(config, 0)
        with torch.no_grad():
            self.load_canonical(module, state)
        return module, config

    # ---- the base's machinery ----------------------------------------------------------------

    def build(
        self, config: GPT2Config, *, params: Params | None, seed: int, device: str, dtype: str
    ) -> Implementation:
        module = self._new_module(config, seed).to(device=device, dtype=_torch_dtype(dtype))
        if params is not None:
            views = self.canonical_state_dict(module)
            missing = sorted(set(views) - set(params) - {"lm_head.weight"})
            if missing:
                raise AdapterError(f"build(params=...) lacks the canonical weights {missing[:5]}")
            with torch.no_grad():
                self.load_canonical(module, {k: torch.as_tensor(v) for k, v in params.items()})
        return self.implementation(module, config, device, dtype)

    def implementation(
        self, module: nn.Module, config: GPT2Config, device: str, dtype: str
    ) -> Implementation:
        """Wrap a module (already on ``device`` in ``dtype``) as an Implementation."""
        return TorchModuleImplementation(self, module, config, device, dtype)

    def _new_module(self, config: GPT2Config, seed: int) -> nn.Module:
        # Modules that draw from the global RNG (transformers' do) are deterministic in seed too.
        # Only the CPU generator: make_module builds on the CPU. torch.manual_seed would also
        # queue a lazy CUDA/XPU/MTIA seed with a formatted stack trace each call, which under
        # hypothesis' deep stacks cost 2.7 ms a build, a fifth of a thorough run on the CPU.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.make_module(config, seed)


def rebuild_unless_declared(kind: type, builtins: str) -> None:
    """For ``__init_subclass__`` of the built-in adapters of module ``builtins`` whose models are
    copied: a subclass defined elsewhere that does not declare ``reuse`` itself rebuilds instead
    of inheriting "copy". Such subclasses change how models are built (they patch a module's
    ``forward`` with a closure over that module, say), and a copy of a patched module would
    still run the original's code and weights; a subclass that knows its copies are independent
    says so (``reuse = "copy"``)."""
    declaring = next((k for k in kind.__mro__ if "reuse" in vars(k)), None)
    if declaring is not None and declaring.__module__ == builtins != kind.__module__:
        kind.reuse = "rebuild"  # type: ignore[attr-defined]


def _plain_module(kind: type) -> bool:
    """Does ``copy.deepcopy`` copy a module of class ``kind`` the way ``nn.Module`` defines it
    (its ``__getstate__`` and ``__setstate__``, no copy hooks of its own)?"""
    return (
        getattr(kind, "__deepcopy__", None) is None
        and kind.__reduce_ex__ is object.__reduce_ex__
        and kind.__reduce__ is object.__reduce__
        and kind.__getstate__ is nn.Module.__getstate__
        and getattr(kind, "__setstate__", None) is nn.Module.__setstate__
    )


_EMPTY_KINDS = (dict, collections.OrderedDict, set)
#: Immutable values ``copy.deepcopy`` returns as they are (a module's flags and sizes).
_ATOMIC_KINDS = frozenset({type(None), bool, int, float, str, torch.dtype})


def deepcopy_module(module: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """``copy.deepcopy(module, memo)``, faster for a tree of plain modules.

    What ``copy.deepcopy`` does with a module is kept: a new object of its class whose state
    (``__getstate__``) is a deep copy of the original's, set through ``__setstate__``; objects
    reached twice are copied once (``memo``). Three shortcuts: submodules are copied by this
    function; an empty ``dict``, ``OrderedDict`` or ``set`` (a module holds about a dozen, its
    hooks) becomes a new empty one of its type without going through ``copy``'s generic
    reconstruction, which took most of the time of copying a small transformers model; and an
    immutable value (a flag, a size, a name) is kept as it is, which is what ``copy.deepcopy``
    returns for it. A module whose class changes how it is copied or pickled goes through
    ``copy.deepcopy``.
    """
    known = memo.get(id(module))
    if known is not None:
        return known
    kind = type(module)
    if not _plain_module(kind):
        copied: nn.Module = copy.deepcopy(module, memo)
        return copied
    new = kind.__new__(kind)
    memo[id(module)] = new
    state = {}
    for name, value in module.__getstate__().items():
        if type(value) in _ATOMIC_KINDS:
            state[name] = value
        elif type(value) in _EMPTY_KINDS and not value:
            known = memo.get(id(value))
            if known is None:
                known = memo[id(value)] = type(value)()
            state[name] = known
        elif name == "_modules" and type(value) is dict:
            modules: dict[str, Any] = {}
            memo[id(value)] = modules
            for key, child in value.items():
                modules[key] = None if child is None else deepcopy_module(child, memo)
            state[name] = modules
        else:
            state[name] = copy.deepcopy(value, memo)
    new.__setstate__(state)
    return new


def derive_capabilities(adapter: Any) -> frozenset[str]:
    """The capabilities a :class:`TorchModuleAdapter` (class or instance) makes possible."""

    def provided(hook: str) -> bool:
        own = getattr(adapter, hook)
        return getattr(own, "__func__", own) is not getattr(TorchModuleAdapter, hook)

    capabilities = {"move", "save-load"}
    for hook, claims in _HOOK_CAPABILITIES.items():
        if provided(hook):
            capabilities.update(claims)
    if provided("input_embedding_module") and provided("forward_loss"):
        capabilities.add("embedding-gradients")
    if getattr(adapter, "param_names", None) is not None or any(map(provided, _PARAMS_HOOKS)):
        capabilities.update(("params", "checkpoint"))
        if provided("forward_loss"):  # the protocol's gradients are by canonical name
            capabilities.add("gradients")
    keywords = inspect.signature(adapter.forward_logits).parameters
    if "attention_mask" in keywords and "position_ids" in keywords:
        capabilities.add("attention-mask")
    if getattr(adapter, "validates_input", False):
        capabilities.add("input-validation")
    return frozenset(capabilities)


class TorchModuleImplementation(Implementation):
    """An ``nn.Module`` under test, driven through its adapter's hooks.

    Outputs are returned as torch tensors on the module's device (the suite converts them);
    nothing is copied that need not be.
    """

    def __init__(
        self,
        adapter: TorchModuleAdapter,
        module: nn.Module,
        config: GPT2Config,
        device: str,
        dtype: str,
    ) -> None:
        self.adapter = adapter
        self.module = module.eval()  # dropout off
        self.config = config
        self.device = device
        self.dtype = dtype

    def _derive(self, module: nn.Module, config: GPT2Config, device: str, dtype: str) -> Any:
        """A new implementation of the same kind around another module."""
        return type(self)(self.adapter, module, config, device, dtype)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """A deep copy (what the suite hands out for an adapter whose ``reuse`` is "copy"), its
        module copied by :func:`deepcopy_module`."""
        kind = type(self)
        new = kind.__new__(kind)
        memo[id(self)] = new
        for name, value in vars(self).items():
            if isinstance(value, nn.Module):
                value = deepcopy_module(value, memo)
            else:
                value = copy.deepcopy(value, memo)
            setattr(new, name, value)
        return new

    def _ids(self, array: Any) -> torch.Tensor:
        """An integer array as a tensor on the module's device (no copy on the CPU)."""
        try:
            return torch.as_tensor(array, device=self.device)
        except (TypeError, RuntimeError) as error:  # strings, objects: not expressible in torch
            dtype = getattr(array, "dtype", type(array).__name__)
            raise InvalidInputError(
                f"ids of dtype {dtype} cannot be given to a torch model ({error}); pass integer "
                "token ids in [0, vocab_size)"
            ) from error

    def _optional_ids(self, array: Any) -> torch.Tensor | None:
        return None if array is None else self._ids(array)

    # ---- forward -------------------------------------------------------------------------------

    @torch.no_grad()
    def logits(
        self,
        tokens: np.ndarray,
        *,
        attention_mask: np.ndarray | None = None,
        position_ids: np.ndarray | None = None,
    ) -> Any:
        ids = self._ids(tokens)
        if attention_mask is None and position_ids is None:
            return self.adapter.forward_logits(self.module, ids)
        return self.adapter.forward_logits(  # type: ignore[call-arg]
            self.module,
            ids,
            attention_mask=self._optional_ids(attention_mask),
            position_ids=self._optional_ids(position_ids),
        )

    def _loss(
        self,
        tokens: np.ndarray,
        labels: np.ndarray,
        *,
        reduction: Reduction = "mean",
        ignore_index: int = IGNORE_INDEX,
    ) -> torch.Tensor:
        """The adapter's loss: what ``loss``, ``gradients``, ``embedding_gradients`` and
        ``sgd_step`` compute, their options passed on to it."""
        return self.adapter.forward_loss(
            self.module, self._ids(tokens), self._ids(labels), reduction, ignore_index
        )

    @torch.no_grad()
    def loss(self, tokens: np.ndarray, labels: np.ndarray, **options: Any) -> Any:
        return self._loss(tokens, labels, **options)

    @torch.no_grad()
    def hidden_states(self, tokens: np.ndarray) -> Any:
        return self.adapter.forward_hidden(self.module, self._ids(tokens))

    @torch.no_grad()
    def last_logits(self, tokens: np.ndarray) -> Any:
        return self.adapter.forward_last(self.module, self._ids(tokens))

    @torch.no_grad()
    def prefill(self, tokens: np.ndarray) -> tuple[Any, Cache]:
        logits, state = self.adapter.forward_cached(self.module, self._ids(tokens), None)
        return logits, Cache(int(tokens.shape[1]), state)

    @torch.no_grad()
    def extend(self, cache: Cache, tokens: np.ndarray) -> tuple[Any, Cache]:
        logits, state = self.adapter.forward_cached(self.module, self._ids(tokens), cache.state)
        return logits, Cache(cache.length + int(tokens.shape[1]), state)

    # ---- weights -----------------------------------------------------------------------------

    @property
    def _canonical(self) -> bool:
        return "params" in self.adapter.capabilities

    def get_params(self) -> Mapping[str, Any]:
        """Canonical weights (views of the live parameters: convert before changing them)."""
        with torch.no_grad():
            views = self.adapter.canonical_state_dict(self.module)
        return {name: tensor.detach() for name, tensor in views.items()}

    @torch.no_grad()
    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        self.adapter.load_canonical(self.module, {k: torch.as_tensor(v) for k, v in params.items()})

    def head_weight(self) -> Any:
        return self.adapter.head_weight(self.module).detach()

    def gradients(
        self, tokens: np.ndarray, labels: np.ndarray, **options: Any
    ) -> tuple[Any, Mapping[str, Any]]:
        """The loss and its gradients by canonical name. Without canonical names (``params`` not
        claimed, so ``gradients`` is not claimed either) they are keyed by the module's own
        parameter names, a tied weight once."""
        loss = self._backward(tokens, labels, **options)
        grads = self._canonical_gradients() if self._canonical else self._own_gradients()
        self.module.zero_grad(set_to_none=True)  # the returned tensors are ours now: no copy
        return loss.detach(), grads

    def _backward(self, tokens: np.ndarray, labels: np.ndarray, **options: Any) -> torch.Tensor:
        """The loss, with its gradients left in the parameters' ``grad`` (cleared first)."""
        self.module.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = self._loss(tokens, labels, **options)
            loss.backward()
        return loss

    def _own_gradients(self) -> dict[str, torch.Tensor]:
        return {
            name: p.grad if p.grad is not None else torch.zeros_like(p)
            for name, p in self.module.named_parameters()
        }

    @torch.no_grad()
    def _canonical_gradients(self) -> dict[str, torch.Tensor]:
        # The canonical layout is a linear map of the parameters (renames, transposes, slices,
        # concatenations), so applying canonical_state_dict to the gradients gives the gradients
        # of the canonical weights: each parameter shows its gradient for the duration.
        parameters = list(self.module.parameters())
        saved = [p.data for p in parameters]
        try:
            for p in parameters:
                p.data = p.grad if p.grad is not None else torch.zeros_like(p)
            views = self.adapter.canonical_state_dict(self.module)
            return {name: tensor.detach() for name, tensor in views.items()}
        finally:
            for p, data in zip(parameters, saved, strict=True):
                p.data = data

    def sgd_step(self, tokens: np.ndarray, labels: np.ndarray, *, lr: float) -> None:
        module = self.module
        self._backward(tokens, labels)  # the mean loss
        with torch.no_grad():
            for p in module.parameters():  # a tied weight is one parameter: updated once
                if p.grad is not None:
                    p.add_(p.grad, alpha=-lr)
        module.zero_grad(set_to_none=True)

    # ---- the model's own embedding matrix -----------------------------------------------------

    def _embedding_weight(self) -> torch.Tensor:
        weight: Any = self.adapter.input_embedding_module(self.module).weight
        return weight

    def input_embedding(self) -> Any:
        return self._embedding_weight().detach()

    @torch.no_grad()
    def set_input_embedding(self, weight: np.ndarray) -> None:
        target = self._embedding_weight()
        value = torch.as_tensor(weight)
        if tuple(value.shape) != tuple(target.shape):
            raise AdapterError(
                f"set_input_embedding: a matrix of shape {tuple(value.shape)} for an embedding "
                f"of shape {tuple(target.shape)}"
            )
        target.copy_(value)

    def embedding_gradients(
        self, tokens: np.ndarray, labels: np.ndarray, **options: Any
    ) -> tuple[Any, Mapping[str, Any]]:
        module = self.module
        lookup = self.adapter.input_embedding_module(module)
        looked_up: list[tuple[Any, torch.Tensor]] = []

        def keep(_: nn.Module, args: Any, output: torch.Tensor) -> None:
            output.retain_grad()
            looked_up.append((args, output))

        handle = lookup.register_forward_hook(keep)
        try:
            loss = self._backward(tokens, labels, **options)
        finally:
            handle.remove()
        if len(looked_up) != 1:
            raise AdapterError(
                f"the input embedding module was called {len(looked_up)} times in one forward; "
                "input_embedding_module must name the one lookup of the token ids"
            )
        embedding: Any = lookup.weight
        head = self.adapter.head_weight(module)

        def grad(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.grad.detach() if tensor.grad is not None else torch.zeros_like(tensor)

        args, output = looked_up[0]
        rows = grad(output)
        # The lookup's own share of the embedding's gradient: the same rows' gradient pulled back
        # through the lookup alone (a lookup that scales its rows, as Gemma's does, included).
        with torch.enable_grad():
            (share,) = torch.autograd.grad(lookup(*args), embedding, grad_outputs=rows)
        grads = {
            "inputs": rows,
            "lookup": share.detach(),
            "embedding": grad(embedding),
            "head": grad(head),
        }
        module.zero_grad(set_to_none=True)
        return loss.detach(), grads

    # ---- lifecycle ---------------------------------------------------------------------------

    def resize_vocab(self, vocab_size: int) -> None:
        config = dataclasses.replace(self.config, vocab_size=vocab_size)  # validates it
        with torch.no_grad():
            self.adapter.resize_module_vocab(self.module, vocab_size)
        self.config = config

    def save(self, directory: Path) -> None:
        self.adapter.save_module(self.module, self.config, Path(directory))

    def load(self, directory: Path) -> Implementation:
        module = self.adapter.load_module(Path(directory), self.config, self.module)
        return self._placed(module, self.config)

    def load_checkpoint(self, path: Path) -> Implementation:
        module, config = self.adapter.load_checkpoint_module(Path(path), self.config)
        return self._placed(module, config)

    def moved(self, device: str, dtype: str) -> Implementation:
        """A copy on ``device`` in ``dtype``; this implementation is left as it is."""
        module = copy.deepcopy(self.module).to(device=device, dtype=_torch_dtype(dtype))
        result: Implementation = self._derive(module, self.config, device, dtype)
        return result

    def _placed(self, module: nn.Module, config: GPT2Config) -> Implementation:
        module = module.to(device=self.device, dtype=_torch_dtype(self.dtype))
        result: Implementation = self._derive(module, config, self.device, self.dtype)
        return result
