"""Transformers' Trainer arguments (TrainingArguments as `to_json_string()` writes them), TRL's SFTConfig and
ModelConfig on top (as `SFTConfig.to_json_string()` or a `trl sft --config` YAML holds them), and a peft
LoraConfig beside them (`peft_config`). LLaMA-Factory reads the Trainer part through `trainer_args`."""
from __future__ import annotations

from planner.enums import ActivationOffload, Batching, Loop, Loss, Method
from planner.foreign import fsdp, shared
from planner.foreign.core import Keys, Mapping, Origin

# transformers/training_args.py: per_device_train_batch_size 8; optim adamw_torch_fused with torch >= 2.8
DEFAULT_MICRO_BATCH = 8
DEFAULT_OPTIM = "adamw_torch_fused"
# transformers' apply_liger_kernel -> liger_kernel/transformers/monkey_patch.py _apply_liger_kernel_to_instance:
# rope, rms_norm, swiglu and fused_linear_cross_entropy on unless liger_kernel_config turns them off
LIGER_KERNELS = ("rope", "rms_norm", "swiglu")
FSDP_OFF = ("", "false", "no")


def trainer_args(m: Mapping, cfg: Keys, tool: str) -> None:
    """What every Trainer-based tool reads the same way: batch, accumulation, optimizer, engines, the loop."""
    _number(m, cfg, "per_device_train_batch_size", "micro_batch", DEFAULT_MICRO_BATCH, 65536)
    _number(m, cfg, "gradient_accumulation_steps", "grad_accum", 1, 1_000_000)
    shared.optimizer(m, cfg, "optim")
    if not cfg.has("optim"):
        m.default("optimizer", shared.OPTIMIZERS[DEFAULT_OPTIM], f"optim absent: {tool}'s default {DEFAULT_OPTIM}")
    deepspeed = cfg.raw("deepspeed")
    if deepspeed:
        m.deepspeed_refs.append((cfg.origin("deepspeed"), deepspeed))
    _fsdp(m, cfg)
    if cfg.has("ddp_bucket_cap_mb"):
        m.set("engine.ddp_bucket_cap_mb", cfg.int("ddp_bucket_cap_mb", 1, 10**6), cfg.origin("ddp_bucket_cap_mb"))
    m.set("loop", Loop.TRAINER, Origin(cfg.file, "(the Trainer's loop)"))
    if cfg.bool("auto_find_batch_size"):
        m.notes.append(f"{cfg.origin('auto_find_batch_size')}: the Trainer halves the micro-batch after an out-of-"
                       "memory error; the plan is for the micro-batch it starts with.")
    if cfg.bool("torch_compile"):
        m.unmodelled_key(cfg.origin("torch_compile"), "fuses kernels and changes what is saved")


def _number(m: Mapping, cfg: Keys, key: str, name: str, default: int, high: int) -> None:
    value = cfg.int(key, 1, high)
    if value is not None:
        m.set(name, value, cfg.origin(key))
    else:
        m.default(name, default, f"{key} absent")


def _fsdp(m: Mapping, cfg: Keys) -> None:
    """`fsdp`: true, or the legacy words ("full_shard auto_wrap offload", or a list of them)."""
    value = cfg.raw("fsdp")
    if value is None or value is False or (isinstance(value, (str, list)) and not value):
        return
    if isinstance(value, str) and value.strip().lower() in FSDP_OFF:
        return
    tokens: tuple[str, ...] = ()
    if isinstance(value, str):
        tokens = tuple(value.split())
    elif isinstance(value, list):
        tokens = cfg.names("fsdp") or ()
    if value is not True and not tokens:
        raise cfg.wrong("fsdp", value, "true, or FSDP options such as \"full_shard auto_wrap\"")
    if any(t.lower() == "no_shard" for t in tokens) and len(tokens) == 1:
        return
    section = cfg.sub("fsdp_config") or Keys({}, cfg.file, "fsdp_config.")
    fsdp.read(m, section, fsdp.TRAINER, cfg.origin("fsdp"), tokens)


def liger_switches(cfg: Keys) -> tuple[bool, bool] | None:
    """(fused linear cross-entropy, layer kernels) of use_liger_kernel with liger_kernel_config
    (transformers/integrations/liger.py), or None when Liger is off."""
    if not cfg.bool("use_liger_kernel"):
        return None
    config = cfg.sub("liger_kernel_config")
    switches = {k: (config.bool(k) if config is not None and config.has(k) else True)
                for k in (*LIGER_KERNELS, "fused_linear_cross_entropy")}
    return switches["fused_linear_cross_entropy"], any(switches[k] for k in LIGER_KERNELS)


def read(m: Mapping, cfg: Keys, tool: str) -> None:
    """TRL (tool "trl") or plain Transformers ("transformers") Trainer arguments."""
    trl = tool == "trl"
    if cfg.has("model_name_or_path"):
        m.set("model", cfg.str("model_name_or_path"), cfg.origin("model_name_or_path"))
    trainer_args(m, cfg, "TRL" if trl else "Transformers")
    _checkpointing(m, cfg, trl)
    _precision(m, cfg, trl)
    _attention(m, cfg)
    _method(m, cfg)
    if trl:
        _sft(m, cfg)
    elif liger_switches(cfg):
        shared.liger(m, cfg.origin("use_liger_kernel"), *liger_switches(cfg))


def _checkpointing(m: Mapping, cfg: Keys, trl: bool) -> None:
    """activation_checkpointing (Transformers 5) or its alias gradient_checkpointing; TRL's default is on
    (trl/trainer/base_config.py), the Trainer's off."""
    for key in ("activation_checkpointing", "gradient_checkpointing"):
        if cfg.bool(key) is not None:
            m.set("grad_ckpt", cfg.bool(key), cfg.origin(key))
    m.default("grad_ckpt", trl, "gradient_checkpointing absent")
    if cfg.bool("activation_offloading"):   # trl/models/activation_offloading.py: every saved tensor to the host
        m.set("activation_offload", ActivationOffload.ALL, cfg.origin("activation_offloading"))


def _precision(m: Mapping, cfg: Keys, trl: bool) -> None:
    """Autocast from bf16 / fp16 over weights in the dtype the model is loaded in: TRL's SFTTrainer loads float32
    unless model_init_kwargs (or ModelConfig's dtype) say otherwise (trl/trainer/sft_trainer.py); a plain Trainer
    gets the model from the user's script, which Transformers 5 loads in the checkpoint's dtype ("auto")."""
    bf16, fp16 = cfg.bool("bf16"), cfg.bool("fp16")
    if bf16 and fp16:
        m.contradiction("precision", cfg.origin("bf16"), cfg.origin("fp16"), "bf16 and fp16 both true")
        return
    if bf16 is None and fp16 is None and trl:
        bf16 = True   # trl/trainer/base_config.py: bf16 = not fp16 when unset
    autocast = "bf16" if bf16 else "fp16" if fp16 else None
    origin = cfg.origin("bf16" if bf16 else "fp16" if fp16 else "bf16")
    weights, weights_origin = _weights_dtype(m, cfg, trl)
    value = shared.precision(weights, autocast)
    if cfg.has("bf16") or cfg.has("fp16"):
        shared.set_precision(m, value, origin)
        if weights_origin is None:
            m.notes.append(f"{origin}: weights loaded in {weights} ({'TRL' if trl else 'Transformers 5'} default), "
                           f"so {value.value}.")
    else:
        m.default("precision", value, "bf16 and fp16 absent")


def _weights_dtype(m: Mapping, cfg: Keys, trl: bool) -> tuple[str, Origin | None]:
    init = cfg.sub("model_init_kwargs")
    for keys, key in ((init, "dtype"), (init, "torch_dtype"), (cfg, "dtype"), (cfg, "torch_dtype")):
        if keys is not None and keys.has(key):
            found = shared.dtype(m, keys.raw(key), keys.origin(key))
            if found:
                return found, keys.origin(key)
    return ("fp32" if trl else "bf16"), None


def _attention(m: Mapping, cfg: Keys) -> None:
    init = cfg.sub("model_init_kwargs")
    for keys in (init, cfg):
        if keys is not None and keys.has("attn_implementation"):
            shared.attention(m, keys.text("attn_implementation"), keys.origin("attn_implementation"))
    m.default("attn", shared.ATTENTION["sdpa"], "attn_implementation absent: transformers' default sdpa")


def _method(m: Mapping, cfg: Keys) -> None:
    """peft_config (a LoraConfig), or TRL's ModelConfig keys (use_peft, lora_r, load_in_4bit...); neither: full."""
    section = cfg.sub("peft_config")
    if section is not None:
        shared.peft_config(m, section)
    elif cfg.bool("use_peft"):
        m.set("method", Method.LORA, cfg.origin("use_peft"))
        # trl/trainer/model_config.py: lora_r 16, lora_alpha 32, lora_target_modules None (peft's default)
        shared.lora_numbers(m, cfg, "lora_r", "lora_alpha", 16, lambda r: 32)
        if cfg.has("lora_target_modules"):
            shared.lora_targets(m, cfg.names("lora_target_modules"), cfg.origin("lora_target_modules"))
        else:
            shared.default_targets(m, "lora_target_modules absent: peft's per-architecture default")
        shared.lora_extras(m, cfg, "use_dora", "lora_modules_to_save")
    else:
        m.set("method", Method.FULL, Origin(cfg.file, "use_peft"))
    _quantization(m, cfg)


def _quantization(m: Mapping, cfg: Keys) -> None:
    init = cfg.sub("model_init_kwargs")
    quant = init.sub("quantization_config") if init is not None else None
    four = [(keys, key) for keys, key in ((cfg, "load_in_4bit"), (quant, "load_in_4bit"))
            if keys is not None and keys.bool(key)]
    eight = [(keys, key) for keys, key in ((cfg, "load_in_8bit"), (quant, "load_in_8bit"))
             if keys is not None and keys.bool(key)]
    if eight:
        m.problem("method", f"{eight[0][0].origin(eight[0][1])}: 8-bit LoRA is not a method fitplan models; use "
                            "load_in_4bit (QLoRA), or set the method on the command line.")
    if not four:
        return
    origin = four[0][0].origin(four[0][1])
    method = m.values.get("method")
    if method is not None and method.value is Method.FULL:
        m.problem("method", f"{origin} quantizes the weights, which only LoRA can train; add use_peft, or set the "
                            "method on the command line.")
        return
    m.replace("method", Method.QLORA, origin)   # LoRA over 4-bit weights
    # trl/trainer/utils.py get_quantization_config: bnb_4bit_use_double_quant = use_bnb_nested_quant (False)
    nested = [(k, key) for k, key in ((cfg, "use_bnb_nested_quant"), (quant, "bnb_4bit_use_double_quant"))
              if k is not None and k.bool(key) is not None]
    for keys, key in nested:
        m.set("double_quant", keys.bool(key), keys.origin(key))
    m.default("double_quant", False, "use_bnb_nested_quant absent")


def _sft(m: Mapping, cfg: Keys) -> None:
    """SFTConfig: sequence length, packing, the loss (trl/trainer/sft_config.py, sft_trainer.py)."""
    for key in ("max_length", "max_seq_length"):
        if cfg.has(key):
            m.set("seq_len", cfg.int(key, 1, 10_000_000), cfg.origin(key))
    if "max_length" in cfg.data and cfg.data["max_length"] is None and not cfg.has("max_seq_length"):
        m.notes.append(f"{cfg.origin('max_length')} is null: sequences are not truncated; give your longest "
                       "with the sequence length option.")
    m.default("seq_len", 1024, "max_length absent: SFTConfig's default")
    packed = [key for key in ("packing", "padding_free") if cfg.bool(key)]
    if packed:   # bfd packing is padding-free: boundaries by position ids (sft_trainer.py)
        m.set("batching", Batching.PACKED, cfg.origin(packed[0]))
    elif cfg.has("packing") or cfg.has("padding_free"):
        m.set("batching", Batching.PADDED, cfg.origin("packing" if cfg.has("packing") else "padding_free"))
    else:
        m.default("batching", Batching.PADDED, "packing absent: padded to the longest")
    # sft_trainer.py add_fused_lm_head: the loss is computed in tiles from the hidden states, never from whole
    # logits, as Liger's fused linear cross-entropy does (and use_liger_kernel then applies only its layer kernels)
    m.set("loss", Loss.LIGER, Origin(cfg.file, "(SFTTrainer's fused LM head)"))
    switches = liger_switches(cfg)
    if switches:
        m.set("liger_kernels", switches[1], cfg.origin("use_liger_kernel"))
