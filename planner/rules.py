"""What can run, said before anyone tries: one set of rules that the search, the estimate, the configs and
the launcher all apply. Each rule returns the sentence that says why not, or None."""
from __future__ import annotations

from planner.config import TrainConfig
from planner.enums import ActivationOffload, Attention, Loss, Method, Offload, Precision, Sharding
from profiles.spec import ModelSpec
from common.errors import opt


def unsupported(spec: ModelSpec, cfg: TrainConfig) -> str | None:
    """Why the libraries cannot train `cfg` on `spec`, or None."""
    return _moe_precision(spec, cfg) or layout_problem(cfg) or kernel_problem(cfg)


def kernel_problem(cfg: TrainConfig) -> str | None:
    """Kernels and offloading that need something else set."""
    if cfg.loss is Loss.CCE and cfg.precision is not Precision.BF16_TRUE:
        # its kernel asserts 16-bit hidden states, which fp32 master weights (and fp32) do not give
        return (f"unsupported: Cut Cross-Entropy needs a model loaded in 16 bit; use {opt('precision')} "
                "bf16-true.")
    if cfg.activation_offload is ActivationOffload.CHECKPOINTS and not cfg.grad_ckpt:
        return (f"unsupported: offloading checkpoints moves each checkpointed layer's input to the CPU, so it "
                f"needs {opt('grad_ckpt')}.")
    return None


def _moe_precision(spec: ModelSpec, cfg: TrainConfig) -> str | None:
    fp32_experts = cfg.method is Method.QLORA or cfg.precision is not Precision.BF16_TRUE
    if spec.is_moe and fp32_experts:
        # transformers 5 runs experts with torch._grouped_mm, which takes bf16 only; QLoRA's
        # prepare_model_for_kbit_training and the *-mixed / fp32 precisions leave expert weights in fp32
        return (f"unsupported: {spec.short_name} is a mixture-of-experts model whose grouped expert matmuls run "
                f"in bf16 only; use {opt('precision')} bf16-true with {opt('method')} full or lora.")
    return None


def layout_problem(cfg: TrainConfig) -> str | None:
    """Sharding and offload that no engine runs together."""
    if cfg.offload is not Offload.NONE and not cfg.sharding.shards_states:
        return (f"unsupported: {opt('offload')} {cfg.offload.value} needs DeepSpeed ZeRO or FSDP; add "
                f"{opt('sharding')} zero2 (zero3 to offload parameters), which runs on one GPU too.")
    if cfg.offload is Offload.OPTIMIZER and cfg.sharding.is_fsdp:
        return (f"unsupported: FSDP offloads parameters and optimizer together; use {opt('offload')} params "
                f"with {opt('sharding')} fsdp.")
    if cfg.offload is Offload.PARAMS and cfg.sharding in (Sharding.ZERO1, Sharding.ZERO2):
        return (f"unsupported: offloading parameters needs {opt('sharding')} zero3 or fsdp; zero1 and zero2 "
                "offload the optimizer only.")
    if cfg.method is Method.QLORA and cfg.sharding.shards_params:
        return _sharded_qlora_problem(cfg)
    return None


def _sharded_qlora_problem(cfg: TrainConfig) -> str | None:
    """FSDP2 shards 4-bit weights packed in bf16 (the recipe's bnb_4bit_quant_storage), measured at bf16-true.
    transformers refuses ZeRO-3 with the device_map a 4-bit load needs; FSDP1 cannot flatten the 4-bit weights
    with the fp32 norms peft's preparation makes."""
    if cfg.sharding is Sharding.FSDP and cfg.precision is Precision.BF16_TRUE:
        return None
    if cfg.sharding is Sharding.FSDP:
        return (f"unsupported: QLoRA with {opt('sharding')} fsdp runs at {opt('precision')} bf16-true only (the "
                "4-bit weights are packed in bf16); use it, or ddp / zero2.")
    why = ("transformers refuses ZeRO-3 with the device_map a 4-bit load passes" if cfg.sharding is Sharding.ZERO3
           else "FSDP1 cannot flatten the 4-bit weights with the fp32 norms peft's preparation makes")
    return (f"unsupported: QLoRA with {opt('sharding')} {cfg.sharding.value} does not run in fitplan's recipe ({why}); "
            f"use {opt('sharding')} fsdp with bf16-true, ddp or zero2.")
    return None


def card_problem(cfg: TrainConfig, card) -> str | None:
    """What the card itself cannot do (a `planner.hardware.Card`): bf16 needs Ampere or newer."""
    if cfg.precision in (Precision.BF16_TRUE, Precision.BF16_MIXED) and not card.bf16:
        return (f"unsupported: {card.name} has no bf16; use {opt('precision')} fp16-mixed (or fp32), or a card "
                "from the Ampere generation on.")
    return None


def adapted_to_card(spec: ModelSpec, cfg: TrainConfig, card, fixed=frozenset()) -> tuple[TrainConfig, list[str]]:
    """cfg switched to what the card (a `planner.hardware.Card`, or None) can run, with a word for each switch:
    FlashAttention-2 needs Ampere or newer and 16-bit inputs, bf16 needs Ampere (unless the user fixed the
    precision); and a warning for a sequence past the model's positions."""
    notes = []
    if card and cfg.attn is Attention.FLASH and not card.flash_attention:
        cfg = cfg.with_(attn=Attention.SDPA)
        notes.append(f"{card.name} cannot run FlashAttention-2 (it needs Ampere or newer): planned with SDPA.")
    if cfg.attn is Attention.FLASH and cfg.precision is Precision.FP32:
        cfg = cfg.with_(attn=Attention.SDPA)
        notes.append("FlashAttention-2 has no fp32 kernels (it takes fp16 and bf16): planned with SDPA.")
    if card and not card.bf16 and "precision" not in fixed and cfg.precision.value.startswith("bf16"):
        cfg = cfg.with_(precision=Precision.FP16_MIXED)
        notes.append(f"{card.name} has no bf16: planned with fp16-mixed.")
    if cfg.seq_len > spec.max_position:
        notes.append(f"{cfg.seq_len:,} tokens is longer than the {spec.max_position:,} positions {spec.short_name} "
                     "was trained for; quality degrades past them unless its rotary scaling is extended.")
    return cfg, notes
