"""Exact parameter accounting: what is there, what is quantized, what trains."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from planner.config import TARGET_ALIASES, TrainConfig
from planner.enums import Method
from common.errors import InputError, opt
from profiles.spec import FUSED_ROLES, LayerKind, Linear, ModelSpec

ROLES = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass(frozen=True)
class ParamCounts:
    total: int
    trainable: int
    quantized: int        # base parameters stored as 4-bit NF4 (QLoRA)
    adapters: int         # LoRA A and B parameters
    largest_layer: int    # parameters of one transformer layer (what ZeRO-3/FSDP gather at once)
    embedding: int        # input embedding (+ learned positions) and untied output head

    @property
    def base_trainable(self) -> int:
        return self.trainable - self.adapters

    @property
    def unquantized(self) -> int:
        return self.total - self.quantized


def resolve_targets(spec: ModelSpec, targets: tuple[str, ...]) -> list[Linear]:
    """The linears of one layer that LoRA adapts; aliases and fused modules resolved like peft does."""
    linears = _adaptable(spec)
    wanted_roles, wanted_modules = set(), set()
    for target in targets:
        target = target.strip()
        if target in TARGET_ALIASES:
            wanted_roles.update(TARGET_ALIASES[target])
        elif target in ROLES:
            wanted_roles.add(target)
        else:
            wanted_modules.add(target)
    unknown = wanted_modules - {lin.module for lin in linears}
    if unknown:
        names = ", ".join(sorted({lin.module for lin in linears}))
        raise InputError(f"LoRA target {', '.join(sorted(unknown))} is not a linear layer of {spec.short_name}; "
                        f"use q,k,v,o,gate,up,down, attn, mlp, all-linear or one of: {names}.")
    names = {lin.module for lin in linears if lin.module in wanted_modules or _serves(lin, wanted_roles)}
    chosen = [lin for lin in linears if lin.module in names]  # peft matches names: GPT-2's two c_proj go together
    if not chosen:
        raise InputError(f"none of the LoRA targets {','.join(targets)} exists in {spec.short_name}; "
                        f"its linear layers are {', '.join(lin.module for lin in linears)}.")
    return chosen


def target_modules(spec: ModelSpec, targets: tuple[str, ...] | list[str]) -> list[str]:
    """peft's `target_modules` for --lora-targets: the module names `resolve_targets` picks, in layer order."""
    return list(dict.fromkeys(lin.module for lin in resolve_targets(spec, tuple(targets))))


def _adaptable(spec: ModelSpec) -> list[Linear]:
    # transformers 5 stores routed experts as fused 3-D parameters, which peft's target_modules cannot adapt;
    # where peft maps MLP names onto those experts, the dense and shared MLPs are out of its reach too
    mlp = set(TARGET_ALIASES["mlp"]) if spec.peft_remaps_mlp else set()
    return [lin for lin in spec.linears() if lin.experts == 1 and lin.role != "router" and not _serves(lin, mlp)]


def _serves(lin: Linear, roles: set[str]) -> bool:
    return lin.role in roles or any(r in roles for r in FUSED_ROLES.get(lin.role, ()))


def lora_params(spec: ModelSpec, cfg: TrainConfig) -> int:
    targets = resolve_targets(spec, cfg.lora_targets)
    for lin in targets:
        if cfg.lora_r > min(lin.d_in, lin.d_out):
            raise InputError(f"LoRA rank {cfg.lora_r} is larger than {lin.module} ({lin.d_in}x{lin.d_out}) "
                            f"of {spec.short_name}; choose {opt('lora_r')} at most {min(lin.d_in, lin.d_out)}.")
    return sum(layers * cfg.lora_r * (lin.d_in + lin.d_out) for lin, layers in _targeted(spec, targets))


def _targeted(spec: ModelSpec, targets: list[Linear]) -> list[tuple[Linear, int]]:
    """(adapted linear, how many layers have it): layers of different kinds carry different projections."""
    wanted = set(targets)
    return [(lin, layers) for lin, layers in spec.layer_linears() if lin in wanted]


def quantized_params(spec: ModelSpec) -> int:
    """Weights bitsandbytes turns into NF4: every nn.Linear of the layers (not lm_head, not biases)."""
    return sum(layers * lin.d_in * lin.d_out for lin, layers in spec.layer_linears() if lin.experts == 1)


def count_params(spec: ModelSpec, cfg: TrainConfig, total: int | None = None) -> ParamCounts:
    """`total` overrides the architecture's count when safetensors headers gave the exact one."""
    total = spec.params if total is None else total
    adapters = lora_params(spec, cfg) if cfg.uses_adapters else 0
    quantized = quantized_params(spec) if cfg.method is Method.QLORA else 0
    trainable = adapters if cfg.uses_adapters else total
    return ParamCounts(total=total, trainable=trainable, quantized=quantized, adapters=adapters,
                       largest_layer=layer_params(spec), embedding=spec.embedding_params())


def layer_params(spec: ModelSpec) -> int:
    """Parameters of the largest transformer layer: its linears, norms, sinks and the like."""
    return max(spec.kind_params(kind) for kind, _ in spec.layer_kinds())


def trainable_tensors(spec: ModelSpec, cfg: TrainConfig) -> list[tuple[tuple[int, ...], int]]:
    """(shape, how many) of each trainable tensor: per-tensor rules (8-bit states, Adafactor) need them."""
    if cfg.uses_adapters:
        return [(shape, layers) for lin, layers in _targeted(spec, resolve_targets(spec, cfg.lora_targets))
                for shape in ((cfg.lora_r, lin.d_in), (lin.d_out, cfg.lora_r))]
    return _base_tensors(spec)


def _base_tensors(spec: ModelSpec) -> list[tuple[tuple[int, ...], int]]:
    h = spec.hidden
    tensors = [(shape, layers) for kind, layers in spec.layer_kinds() for shape in _kind_shapes(spec, kind)]
    tensors.append(((spec.vocab, h), 1 if spec.tied_embeddings else 2))
    if spec.learned_positions:
        tensors.append(((spec.learned_positions, h), 1))
    if spec.lm_head_bias:
        tensors.append(((spec.vocab,), 1))
    if spec.final_norm:
        tensors.append(((h,), 2 if spec.norm_bias else 1))
    return tensors


def _kind_shapes(spec: ModelSpec, kind: LayerKind) -> list[tuple[int, ...]]:
    """The parameter tensors of one layer of this kind, as transformers shapes them."""
    return [shape for lin in spec.kind_linears(kind) for shape in _linear_shapes(lin)] + _other_shapes(spec, kind)


def _linear_shapes(lin: Linear) -> list[tuple[int, ...]]:
    """Its weight, then its bias; routed experts stack theirs in one parameter."""
    stacked = (lin.experts,) if lin.experts > 1 else ()
    return [stacked + (lin.d_out, lin.d_in)] + ([stacked + (lin.d_out,)] if lin.bias else [])


def _other_shapes(spec: ModelSpec, kind: LayerKind) -> list[tuple[int, ...]]:
    """A layer's tensors besides its linears: its norms, then per-head or latent norms, DeltaNet's or sinks."""
    layer = [(spec.hidden,)] * (spec.norms_per_layer * (2 if spec.norm_bias else 1))
    if kind.attention == "linear":  # DeltaNet: gated norm, depthwise conv, A_log and dt_bias
        conv = 2 * spec.linear_k_heads * spec.linear_k_head_dim + spec.linear_v_heads * spec.linear_v_head_dim
        return layer + [(spec.linear_v_head_dim,), (conv, 1, spec.linear_conv_kernel)] + [(spec.linear_v_heads,)] * 2
    if spec.is_mla:
        return layer + [(spec.q_lora_rank,)] * bool(spec.q_lora_rank) + [(spec.kv_lora_rank,)]
    layer += {None: [], "weightless": [], "head": [(spec.head_dim,)] * 2,
              "full": [(spec.q_dim,), (spec.kv_dim,)]}[spec.qk_norm]
    return layer + ([(spec.n_head,)] if spec.attn_sinks else [])


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


@dataclass(frozen=True)
class ParamTensor:
    """One parameter tensor as `model.parameters()` lists it."""

    numel: int
    layer: int | None      # 0-based transformer layer; None for the embeddings, the final norm and lm_head
    trainable: bool
    quantized: bool = False  # stored as NF4 (QLoRA's layer linears)
    module: str = ""         # the module that owns it directly (ZeRO-3 gathers module by module)


def ordered_params(spec: ModelSpec, cfg: TrainConfig) -> tuple[ParamTensor, ...]:
    """Every parameter tensor in `model.parameters()` order: the embeddings, each layer by its own kind (its
    linears with LoRA's A and B after the weight they adapt, then its norms and the rest), the final norm,
    lm_head. ZeRO's partitions and gradient buckets and FSDP's units follow this order."""
    return _ordered_params(spec, cfg.method, cfg.lora_r, cfg.lora_targets)


def clear_param_caches() -> None:
    _ordered_params.cache_clear()


@functools.lru_cache(maxsize=256)
def _ordered_params(spec: ModelSpec, method: Method, lora_r: int, targets: tuple[str, ...]) -> tuple[ParamTensor, ...]:
    full, h = method is Method.FULL, spec.hidden
    adapted = set(resolve_targets(spec, targets)) if method is not Method.FULL else set()
    embeddings = [spec.vocab * h] + ([spec.learned_positions * h] if spec.learned_positions else [])
    out = [ParamTensor(n, None, full, module=name) for n, name in zip(embeddings, ("embed", "positions"))]
    for layer in range(spec.n_layer):
        out += _layer_params(spec, layer, full, adapted, lora_r, method is Method.QLORA)
    if spec.final_norm:
        out += [ParamTensor(h, None, full, module="norm")] * (2 if spec.norm_bias else 1)
    if not spec.tied_embeddings:
        out.append(ParamTensor(spec.vocab * h, None, full, module="lm_head"))
    if spec.lm_head_bias:
        out.append(ParamTensor(spec.vocab, None, full, module="lm_head"))
    return tuple(out)


def _layer_params(spec: ModelSpec, layer: int, full: bool, adapted: set[Linear], r: int,
                  quantized: bool) -> list[ParamTensor]:
    """One layer's tensors by its own kind: each linear's weight, bias and LoRA's A and B, then the rest, each
    named by the module that owns it."""
    kind, out = spec.layer_kind(layer), []
    for lin in spec.kind_linears(kind):
        name = f"{layer}.{lin.module}"
        weight, *bias = map(numel, _linear_shapes(lin))
        out.append(ParamTensor(weight, layer, full, quantized and lin.experts == 1, name))
        out += [ParamTensor(n, layer, full, module=name) for n in bias]
        if lin in adapted:
            out += [ParamTensor(r * lin.d_in, layer, True, module=name + ".lora_A"),
                    ParamTensor(lin.d_out * r, layer, True, module=name + ".lora_B")]
    others = _other_shapes(spec, kind)
    return out + [ParamTensor(numel(shape), layer, full, module=f"{layer}.other{k}") for k, shape in enumerate(others)]
