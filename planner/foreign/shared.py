"""Rules the Hugging Face tools share, mapped once: optimizer names (Transformers' `OptimizerNames`), attention
implementations, LoRA targets and peft's `LoraConfig`, Liger's kernel switches, and how the weights' dtype and
the Trainer's autocast make one of fitplan's precisions."""
from __future__ import annotations

from common.errors import opt
from planner.enums import Attention, Loss, Method, Optimizer, Precision
from planner.foreign.core import Keys, Mapping, Origin, family, show

# transformers/training_args.py OptimizerNames -> the optimizer record with the same states
OPTIMIZERS = {
    "adamw_torch": Optimizer.ADAMW, "adamw_hf": Optimizer.ADAMW, "adamw_torch_xla": Optimizer.ADAMW,
    "adamw_apex_fused": Optimizer.ADAMW_FUSED, "adamw_torch_npu_fused": Optimizer.ADAMW_FUSED,
    "adamw_torch_fused": Optimizer.ADAMW_FUSED,
    "adamw_8bit": Optimizer.ADAMW_8BIT, "adamw_bnb_8bit": Optimizer.ADAMW_8BIT,
    "paged_adamw_8bit": Optimizer.PAGED_ADAMW_8BIT, "paged_adamw_32bit": Optimizer.PAGED_ADAMW,
    "adafactor": Optimizer.ADAFACTOR, "sgd": Optimizer.SGD,
}
# DeepSpeed's own optimizer section (deepspeed/runtime/config.py): Adam and AdamW build FusedAdam (fp32 states)
DEEPSPEED_OPTIMIZERS = {"adam": Optimizer.ADAMW, "adamw": Optimizer.ADAMW, "fusedadam": Optimizer.ADAMW,
                        "cpuadam": Optimizer.ADAMW}

# transformers' attn_implementation values (modeling_utils.py); the memory-efficient kernels that save what
# FlashAttention-2 saves (q, k, v, the output and the log-sum-exp) are planned as it
ATTENTION = {"eager": Attention.EAGER, "sdpa": Attention.SDPA, "flash_attention_2": Attention.FLASH,
             "flash_attention_3": Attention.FLASH, "flash_attention_4": Attention.FLASH}
LIKE_FLASH = ("flex_attention", "xformers", "sage", "flash_attention_torch", "fp8", "sdpa_varlen")

DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "torch.bfloat16": "bf16", "float16": "fp16", "fp16": "fp16",
          "half": "fp16", "torch.float16": "fp16", "float32": "fp32", "fp32": "fp32", "float": "fp32",
          "torch.float32": "fp32"}
ALL_LINEAR = ("all-linear",)


def optimizer(m: Mapping, cfg: Keys, key: str, weak: bool = False) -> None:
    name = cfg.str(key)
    if name is None:
        return
    found = OPTIMIZERS.get(name.strip().lower())
    if found is None:
        m.problem("optimizer", f"{key} {name[:40]!r} in {cfg.file} is not an optimizer fitplan models (it models "
                               f"{', '.join(sorted(OPTIMIZERS))}); choose one, or set {opt('optimizer')} on the "
                               "command line.")
        return
    m.set("optimizer", found, cfg.origin(key), weak=weak)


def attention(m: Mapping, name: str, origin: Origin) -> None:
    """One attention implementation, by transformers' name (or a Hub kernel path)."""
    lowered = name.strip().lower()
    found = ATTENTION.get(lowered)
    if found is None and (lowered in LIKE_FLASH or "flash" in lowered):
        found = Attention.FLASH
        m.notes.append(f"{origin} {name[:40]!r} saves what FlashAttention-2 saves; planned as flash.")
    if found is None:
        m.problem("attn", f"{origin} names attention {name[:40]!r}, which fitplan does not model; use eager, sdpa or "
                          f"flash_attention_2, or set {opt('attn')} on the command line.")
        return
    m.set("attn", found, origin)


def lora_targets(m: Mapping, names: tuple[str, ...], origin: Origin) -> None:
    """peft's target_modules: "all-linear" (LLaMA-Factory says "all"), or module names."""
    if any(n.lower() in ("all-linear", "all_linear", "all") for n in names):
        m.set("lora_targets", ALL_LINEAR, origin)
    elif names:
        m.set("lora_targets", tuple(dict.fromkeys(names)), origin)


def peft_config(m: Mapping, cfg: Keys) -> None:
    """A peft LoraConfig written out as a mapping (peft/tuners/lora/config.py: r 8, lora_alpha 8 by default)."""
    kind = (cfg.str("peft_type") or "LORA").upper()
    if kind != "LORA":
        m.problem("method", f"{cfg.prefix}peft_type {kind[:20]} in {cfg.file} is not LoRA; fitplan models LoRA and "
                            f"QLoRA only; set {opt('method')} on the command line.")
        return
    m.set("method", Method.LORA, cfg.origin("peft_type") if cfg.has("peft_type") else cfg.origin("r"))
    lora_numbers(m, cfg, "r", "lora_alpha", default_r=8, default_alpha=lambda r: 8)
    targets = cfg.raw("target_modules")
    if isinstance(targets, str) and targets.lower() not in ("all-linear", "all_linear"):
        m.problem("lora_targets", f"{cfg.prefix}target_modules in {cfg.file} is a regular expression; fitplan needs "
                                  f"module names; set {opt('lora_targets')} on the command line.")
    elif targets is not None:
        lora_targets(m, cfg.names("target_modules"), cfg.origin("target_modules"))
    else:
        default_targets(m, f"{cfg.prefix}target_modules absent: peft's per-architecture default")
    lora_extras(m, cfg, "use_dora", "modules_to_save")


def lora_numbers(m: Mapping, cfg: Keys, r_key: str, alpha_key: str, default_r: int, default_alpha) -> None:
    r = cfg.int(r_key, 1, 65536)
    if r is not None:
        m.set("lora_r", r, cfg.origin(r_key))
    else:
        m.default("lora_r", default_r, f"{cfg.prefix}{r_key} absent")
    alpha = cfg.int(alpha_key, 1, 10**6)
    if alpha is not None:
        m.set("lora_alpha", alpha, cfg.origin(alpha_key))
    else:
        m.default("lora_alpha", default_alpha(r or default_r), f"{cfg.prefix}{alpha_key} absent")


def default_targets(m: Mapping, why: str) -> None:
    # peft/utils/constants.py TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING: q_proj, v_proj for Llama-like
    # models, the fused qkv projection where there is one
    m.default("lora_targets", ("q", "v"), why)


def lora_extras(m: Mapping, cfg: Keys, dora: str, modules_to_save: str) -> None:
    if cfg.bool(dora):
        m.unmodelled_key(cfg.origin(dora), "adds DoRA's magnitude vectors and their activations")
    if cfg.raw(modules_to_save):
        m.unmodelled_key(cfg.origin(modules_to_save), "trains full copies of those modules")


def liger(m: Mapping, origin: Origin, fused_loss: bool, kernels: bool, kernels_origin: Origin | None = None) -> None:
    """Liger's fused linear cross-entropy (the logits never exist whole) and its RMSNorm / SwiGLU / RoPE."""
    m.set("loss", Loss.LIGER if fused_loss else Loss.STANDARD, origin)
    m.set("liger_kernels", kernels, kernels_origin or origin)


def dtype(m: Mapping, value, origin: Origin) -> str | None:
    """bf16, fp16 or fp32 from a dtype name; "auto" is the checkpoint's dtype, bf16 for the models fitplan
    knows."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "auto":
        m.notes.append(f"{origin} is auto: the checkpoint's dtype, planned as bf16.")
        return "bf16"
    if text not in DTYPES:
        m.problem("precision", f"{origin} is {show(value)}, not a dtype fitplan knows (bfloat16, float16, float32); "
                               f"fix it, or set {opt('precision')} on the command line.")
        return None
    return DTYPES[text]


def precision(weights: str, autocast: str | None) -> Precision:
    """fitplan's precision for weights loaded in `weights` trained under `autocast` (Trainer's bf16 / fp16): 16-bit
    weights are bf16-true; fp32 weights under autocast are *-mixed; fp16 weights, which fitplan does not model
    as such, are planned as fp16-mixed."""
    if weights == "bf16" and autocast != "fp16":
        return Precision.BF16_TRUE
    if weights == "fp16" or autocast == "fp16":
        return Precision.FP16_MIXED
    return Precision.BF16_MIXED if autocast == "bf16" else Precision.FP32


def same_family(a, b) -> bool:
    return family(a) == family(b)


def set_precision(m: Mapping, value: Precision, origin: Origin, weak: bool = False) -> None:
    """Precisions agree when their 16-bit type agrees: a launcher's bf16 is the training config's bf16-true or
    bf16-mixed, whichever the training config says."""
    m.set("precision", value, origin, weak=weak, same=same_family)
