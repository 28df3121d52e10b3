"""A LLaMA-Factory training YAML (src/llamafactory/hparams/*_args.py) with the Trainer arguments it passes on."""
from __future__ import annotations

from planner.enums import ActivationOffload, Attention, Batching, Method, Precision
from planner.foreign import shared, trainer
from planner.foreign.core import Keys, Mapping

# hparams/finetuning_args.py finetuning_type (default lora)
METHODS = {"lora": Method.LORA, "full": Method.FULL}
# extras/constants.py AttentionFunction; model/model_utils/attention.py: auto leaves transformers' default (sdpa)
ATTENTION = {"auto": Attention.SDPA, "disabled": Attention.EAGER, "sdpa": Attention.SDPA, "fa2": Attention.FLASH,
             "fa3": Attention.FLASH}
UNMODELLED = {"use_galore": "projects gradients (GaLore)", "use_apollo": "projects gradients (APOLLO)",
              "use_badam": "trains one block at a time (BAdam)", "use_adam_mini": "shares second moments (Adam-mini)",
              "use_llama_pro": "adds and trains new blocks (LLaMA Pro)", "use_unsloth": "swaps in Unsloth's kernels",
              "mixture_of_depths": "skips tokens per layer", "shift_attn": "shifts attention groups (S^2-Attn)",
              "upcast_lmhead_output": "keeps the logits in fp32", "use_kt": "offloads experts (KTransformers)"}


def read(m: Mapping, cfg: Keys) -> None:
    if cfg.has("model_name_or_path"):
        m.set("model", cfg.str("model_name_or_path"), cfg.origin("model_name_or_path"))
    stage = (cfg.str("stage") or "sft").strip().lower()
    if stage not in ("sft", "pt"):
        m.unmodelled_key(cfg.origin("stage"), f"is {stage[:10]}: a reward model, reference model or generation")
    trainer.trainer_args(m, cfg, "LLaMA-Factory")
    method = _method(m, cfg)
    _precision(m, cfg, method)
    _sequence(m, cfg)
    _checkpointing(m, cfg)
    _attention(m, cfg)
    if cfg.bool("enable_liger_kernel"):
        # model/model_utils/liger_kernel.py: fused linear cross-entropy only where the stage needs no logits
        shared.liger(m, cfg.origin("enable_liger_kernel"), stage in ("sft", "pt"), True)
    for key, what in UNMODELLED.items():
        if cfg.bool(key) if key != "mixture_of_depths" else cfg.has(key):
            m.unmodelled_key(cfg.origin(key), what)


def _attention(m: Mapping, cfg: Keys) -> None:
    value = (cfg.text("flash_attn") or "auto").strip().lower()
    if value not in ATTENTION:
        m.problem("attn", f"{cfg.origin('flash_attn')} is {value[:20]!r}, not auto, disabled, sdpa, fa2 or fa3; "
                          "fix the file.")
    elif cfg.has("flash_attn"):
        m.set("attn", ATTENTION[value], cfg.origin("flash_attn"))
    else:
        m.default("attn", Attention.SDPA, "flash_attn absent (auto: transformers' default sdpa)")


def _method(m: Mapping, cfg: Keys) -> Method:
    kind = (cfg.str("finetuning_type") or "lora").strip().lower()
    origin = cfg.origin("finetuning_type")
    if kind not in METHODS:
        m.problem("method", f"{origin} is {kind[:20]!r}; fitplan models full and lora (with quantization_bit 4: "
                            "QLoRA); set the method on the command line.")
        return Method.LORA
    method = METHODS[kind]
    m.set("method", method, origin)
    if method is Method.LORA:
        shared.lora_numbers(m, cfg, "lora_rank", "lora_alpha", 8, lambda r: 2 * r)   # finetuning_args.py
        if cfg.has("lora_target"):
            shared.lora_targets(m, cfg.names("lora_target"), cfg.origin("lora_target"))
        else:
            m.default("lora_targets", shared.ALL_LINEAR, "lora_target absent (all)")
        shared.lora_extras(m, cfg, "use_dora", "additional_target")
    return _quantization(m, cfg, method)


def _quantization(m: Mapping, cfg: Keys, method: Method) -> Method:
    bits = cfg.text("quantization_bit")
    if bits is None:
        return method
    kind = (cfg.str("quantization_method") or "bnb").strip().lower()
    origin = cfg.origin("quantization_bit")
    if bits.strip() != "4" or kind != "bnb":
        m.problem("method", f"{origin} is {bits[:10]} with {kind[:10]}; fitplan models 4-bit bitsandbytes (QLoRA) "
                            "only; set the method on the command line.")
        return method
    if method is not Method.LORA:
        m.problem("method", f"{origin}: quantized models can only be trained with LoRA (model/adapter.py); set "
                            "finetuning_type lora, or the method on the command line.")
        return method
    m.replace("method", Method.QLORA, origin)   # LoRA over 4-bit weights
    if cfg.has("double_quantization"):
        m.set("double_quant", cfg.bool("double_quantization"), cfg.origin("double_quantization"))
    else:
        m.default("double_quant", True, "double_quantization absent (model_args.py default)")
    return Method.QLORA


def _precision(m: Mapping, cfg: Keys, method: Method) -> None:
    """model/adapter.py: trainable parameters are upcast to fp32 unless pure_bf16, so a full fine-tune with bf16 is
    fp32 weights under bf16 autocast (bf16-mixed) and with pure_bf16 bf16-true; LoRA keeps the base in the
    compute dtype (bf16-true, its adapters fp32 either way)."""
    bf16, fp16, pure = cfg.bool("bf16"), cfg.bool("fp16"), cfg.bool("pure_bf16")
    if bf16 and fp16:
        m.contradiction("precision", cfg.origin("bf16"), cfg.origin("fp16"), "bf16 and fp16 both true")
        return
    if pure:
        shared.set_precision(m, Precision.BF16_TRUE, cfg.origin("pure_bf16"))
    elif bf16:
        value = Precision.BF16_MIXED if method is Method.FULL else Precision.BF16_TRUE
        shared.set_precision(m, value, cfg.origin("bf16"))
    elif fp16:
        shared.set_precision(m, Precision.FP16_MIXED, cfg.origin("fp16"))
    else:
        m.default("precision", Precision.FP32, "bf16 and fp16 absent")


def _sequence(m: Mapping, cfg: Keys) -> None:
    """cutoff_len (2048); packing takes one token off it (hparams/data_args.py) and packs sequences."""
    length = cfg.int("cutoff_len", 2, 10_000_000)
    packed = cfg.bool("packing") or cfg.bool("neat_packing")
    if length is not None:
        m.set("seq_len", length - 1 if packed else length, cfg.origin("cutoff_len"))
    else:
        m.default("seq_len", 2047 if packed else 2048, "cutoff_len absent")
    key = "neat_packing" if cfg.bool("neat_packing") else "packing"
    if packed:
        m.set("batching", Batching.PACKED, cfg.origin(key))
    else:
        m.default("batching", Batching.PADDED, "packing absent: padded to the longest")


def _checkpointing(m: Mapping, cfg: Keys) -> None:
    """model/model_utils/checkpointing.py: on unless disable_gradient_checkpointing; use_unsloth_gc keeps each
    checkpointed layer's input on the host."""
    disabled = cfg.bool("disable_gradient_checkpointing")
    if disabled is not None:
        m.set("grad_ckpt", not disabled, cfg.origin("disable_gradient_checkpointing"))
    else:
        m.default("grad_ckpt", True, "disable_gradient_checkpointing absent")
    if cfg.bool("use_unsloth_gc") and not disabled:
        m.set("activation_offload", ActivationOffload.CHECKPOINTS, cfg.origin("use_unsloth_gc"))
