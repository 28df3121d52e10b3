"""An axolotl YAML (src/axolotl/utils/schemas/*.py, integrations/*/args.py): model, adapter, batch, sequence,
checkpointing and offloading, precision, attention, packing, the Liger and Cut Cross-Entropy plugins, DeepSpeed
and FSDP. axolotl trains with transformers' Trainer."""
from __future__ import annotations

from planner.enums import ActivationOffload, Attention, Batching, Loop, Loss, Method, Precision
from planner.foreign import fsdp, shared
from planner.foreign.core import Keys, Mapping, Origin

LIGER_PLUGIN = "axolotl.integrations.liger"
CCE_PLUGIN = "axolotl.integrations.cut_cross_entropy"
# utils/schemas/config.py: the deprecated attention switches and what attn_implementation they mean
SWITCHES = {"flash_attention": "flash_attention_2", "sdp_attention": "sdpa", "eager_attention": "eager",
            "xformers_attention": "xformers", "flex_attention": "flex_attention", "sage_attention": "sage"}
UNMODELLED = {"tensor_parallel_size": "splits layers over GPUs (tensor parallelism)",
              "context_parallel_size": "splits sequences over GPUs (context parallelism)",
              "sequence_parallel_degree": "splits sequences over GPUs", "dp_shard_size": "shards within groups",
              "tiled_mlp": "computes the MLP in tiles", "chunked_cross_entropy": "computes the loss in chunks",
              "unfrozen_parameters": "trains only some parameters",
              "relora": "merges adapters during training (ReLoRA)",
              "fp8": "computes in fp8", "qat": "adds fake quantization", "gptq": "loads GPTQ weights",
              "lora_mlp_kernel": "replaces the LoRA MLP's autograd",
              "lora_qkv_kernel": "replaces LoRA q,k,v's autograd",
              "lora_o_kernel": "replaces LoRA o's autograd", "layer_offloading": "offloads layer weights",
              "selective_checkpointing": "keeps attention outputs inside checkpointed layers",
              "rl": "trains with a reference model and paired data", "reward_model": "trains a reward model",
              "process_reward_model": "trains a reward model", "torch_compile": "fuses kernels"}


def read(m: Mapping, cfg: Keys) -> None:
    if cfg.has("base_model"):
        m.set("model", cfg.str("base_model"), cfg.origin("base_model"))
    m.set("loop", Loop.TRAINER, Origin(cfg.file, "(the Trainer's loop)"))
    method = _method(m, cfg)
    _batch(m, cfg)
    _checkpointing(m, cfg)
    _precision(m, cfg)
    shared.optimizer(m, cfg, "optimizer")
    if not cfg.has("optimizer"):   # utils/schemas/training.py
        m.default("optimizer", shared.OPTIMIZERS["adamw_torch_fused"], "optimizer absent: adamw_torch_fused")
    _attention(m, cfg)
    _packing(m, cfg)
    _plugins(m, cfg)
    _engines(m, cfg, method)
    for key, what in UNMODELLED.items():
        value = cfg.raw(key)
        if value not in (None, False, 0, 1, "", [], {}):
            m.unmodelled_key(cfg.origin(key), what)


def _method(m: Mapping, cfg: Keys) -> Method:
    adapter = (cfg.str("adapter") or "").strip().lower()
    four, eight = cfg.bool("load_in_4bit"), cfg.bool("load_in_8bit")
    origin = cfg.origin("adapter")
    if adapter not in ("", "lora", "qlora"):
        m.problem("method", f"{origin} is {adapter[:20]!r}; fitplan models lora and qlora; set the method on the "
                            "command line.")
        return Method.LORA
    if adapter == "qlora" and not four:   # utils/schemas/validation.py: qlora requires load_in_4bit
        m.contradiction("method", origin, cfg.origin("load_in_4bit"), "qlora needs load_in_4bit: true")
    if eight:
        m.problem("method", f"{cfg.origin('load_in_8bit')}: 8-bit LoRA is not a method fitplan models; use "
                            "adapter: qlora with load_in_4bit, or set the method on the command line.")
    if not adapter:
        if four:
            m.contradiction("method", origin, cfg.origin("load_in_4bit"), "4-bit weights train only with an adapter")
        m.set("method", Method.FULL, origin)
        return Method.FULL
    method = Method.QLORA if four else Method.LORA
    m.set("method", method, cfg.origin("load_in_4bit") if four else origin)
    _lora(m, cfg)
    if four:
        _double_quant(m, cfg)
    return method


def _double_quant(m: Mapping, cfg: Keys) -> None:
    """loaders/model.py: bnb_4bit_use_double_quant True unless bnb_config_kwargs says otherwise."""
    extra = cfg.sub("bnb_config_kwargs")
    if extra is not None and extra.has("bnb_4bit_use_double_quant"):
        m.set("double_quant", extra.bool("bnb_4bit_use_double_quant"), extra.origin("bnb_4bit_use_double_quant"))
    else:
        m.default("double_quant", True, "bnb_config_kwargs absent")


def _lora(m: Mapping, cfg: Keys) -> None:
    shared.lora_numbers(m, cfg, "lora_r", "lora_alpha", 8, lambda r: 8)   # peft's LoraConfig defaults
    if cfg.bool("lora_target_linear"):
        m.set("lora_targets", shared.ALL_LINEAR, cfg.origin("lora_target_linear"))
    elif cfg.has("lora_target_modules"):
        target = cfg.raw("lora_target_modules")
        if isinstance(target, str) and target.lower() not in ("all-linear", "all_linear") and "," not in target:
            shared.lora_targets(m, (target,), cfg.origin("lora_target_modules"))
        else:
            shared.lora_targets(m, cfg.names("lora_target_modules"), cfg.origin("lora_target_modules"))
    else:
        shared.default_targets(m, "lora_target_modules and lora_target_linear absent: peft's default")
    shared.lora_extras(m, cfg, "peft_use_dora", "lora_modules_to_save")


def _batch(m: Mapping, cfg: Keys) -> None:
    """micro_batch_size and gradient_accumulation_steps (1 and 1), or batch_size / micro_batch_size
    (utils/config/__init__.py normalize_config); sequence_len (512)."""
    micro = cfg.int("micro_batch_size", 1, 65536)
    if micro is not None:
        m.set("micro_batch", micro, cfg.origin("micro_batch_size"))
    else:
        m.default("micro_batch", 1, "micro_batch_size absent")
    accum, batch = cfg.int("gradient_accumulation_steps", 1, 10**6), cfg.int("batch_size", 1, 10**8)
    if accum is not None and batch is not None:   # utils/schemas/validation.py check_batch_size_fields
        m.contradiction("grad_accum", cfg.origin("gradient_accumulation_steps"), cfg.origin("batch_size"),
                        "axolotl takes only one of them")
    elif accum is not None:
        m.set("grad_accum", accum, cfg.origin("gradient_accumulation_steps"))
    elif batch is not None:
        m.set("grad_accum", max(1, batch // (micro or 1)), cfg.origin("batch_size"))
    else:
        m.default("grad_accum", 1, "gradient_accumulation_steps absent")
    length = cfg.int("sequence_len", 1, 10_000_000)
    if length is not None:
        m.set("seq_len", length, cfg.origin("sequence_len"))
    else:
        m.default("seq_len", 512, "sequence_len absent")


def _checkpointing(m: Mapping, cfg: Keys) -> None:
    """gradient_checkpointing: true, or "offload" / "offload_disk": checkpointing with each checkpointed layer's
    input off the GPU ("checkpoints"; utils/schemas/validation.py check_gradient_checkpointing_w_offload now
    routes it through TRL's offloader, which under checkpointing holds just those inputs); activation_offloading:
    true, "legacy" or "disk" (TRL's offloader: every saved tensor, "all") or "hidden_states" (checkpointed inputs);
    it needs checkpointing (validation.py check_activation_offloading_wo_gc)."""
    value = cfg.raw("gradient_checkpointing")
    origin = cfg.origin("gradient_checkpointing")
    if isinstance(value, str) and value.strip().lower() in ("offload", "offload_disk"):
        m.set("grad_ckpt", True, origin)
        m.set("activation_offload", ActivationOffload.CHECKPOINTS, origin)
    elif value is not None:
        m.set("grad_ckpt", cfg.bool("gradient_checkpointing"), origin)
    else:
        m.default("grad_ckpt", False, "gradient_checkpointing absent")
    offload = cfg.raw("activation_offloading")
    if offload in (None, False):
        return
    kind = offload.strip().lower() if isinstance(offload, str) else offload
    if kind not in (True, "legacy", "disk", "hidden_states"):
        raise cfg.wrong("activation_offloading", offload, "true, false, legacy, disk or hidden_states")
    place = ActivationOffload.CHECKPOINTS if kind == "hidden_states" else ActivationOffload.ALL
    m.set("activation_offload", place, cfg.origin("activation_offloading"))
    if not value:
        m.contradiction("grad_ckpt", cfg.origin("activation_offloading"), origin,
                        "axolotl's activation offloading needs gradient checkpointing")


def _precision(m: Mapping, cfg: Keys) -> None:
    """utils/config/__init__.py resolve_dtype: bf16 (true, "full", or "auto" where the GPU has bf16) or bfloat16
    loads the weights in bf16 (torch_dtype) and trains them there: bf16-true; fp16 or float16 loads fp16,
    planned as fp16-mixed; neither is fp32."""
    bf16 = _bf16(cfg)
    on = "bf16" if bf16 == "on" else "bfloat16" if cfg.bool("bfloat16") else None
    half = next((key for key in ("fp16", "float16") if cfg.bool(key)), None)
    if on and half:
        m.contradiction("precision", cfg.origin(on), cfg.origin(half), "bf16 and fp16 both on")
    elif on:
        shared.set_precision(m, Precision.BF16_TRUE, cfg.origin(on))
    elif half:   # fp16 turns bf16: auto off
        shared.set_precision(m, Precision.FP16_MIXED, cfg.origin(half))
    elif bf16 == "auto":
        m.default("precision", Precision.BF16_TRUE, "bf16: auto (fp16-mixed where the GPU has no bf16)")
    else:
        m.default("precision", Precision.FP32, "bf16 and fp16 absent")


def _bf16(cfg: Keys) -> str | None:
    """bf16 as "on", "off" or "auto" (None when absent)."""
    raw = cfg.raw("bf16")
    if isinstance(raw, str) and raw.strip().lower() in ("auto", "full"):
        return "auto" if raw.strip().lower() == "auto" else "on"
    value = cfg.bool("bf16")
    return None if value is None else "on" if value else "off"


def _attention(m: Mapping, cfg: Keys) -> None:
    if cfg.has("attn_implementation"):
        shared.attention(m, cfg.text("attn_implementation"), cfg.origin("attn_implementation"))
    for key, name in SWITCHES.items():
        if cfg.bool(key):
            shared.attention(m, name, cfg.origin(key))
    m.default("attn", Attention.SDPA, "no attention key: transformers' default sdpa")


def _packing(m: Mapping, cfg: Keys) -> None:
    """sample_packing (or batch_flattening) packs sequences with position ids (utils/collators/batching.py);
    otherwise the collator pads each batch to its longest, or to sequence_len with pad_to_sequence_len."""
    packed = [key for key in ("sample_packing", "batch_flattening") if cfg.raw(key) not in (None, False)]
    if packed:
        m.set("batching", Batching.PACKED, cfg.origin(packed[0]))
    elif cfg.has("pad_to_sequence_len"):
        m.set("batching", Batching.PADDED, cfg.origin("pad_to_sequence_len"))
    else:
        m.default("batching", Batching.PADDED, "sample_packing absent: padded batches")


def _plugins(m: Mapping, cfg: Keys) -> None:
    """The Liger and Cut Cross-Entropy plugins act only when `plugins` lists them."""
    plugins = " ".join(cfg.names("plugins") or ())
    liger_keys = [k for k in cfg.data if k.startswith("liger_")]
    if LIGER_PLUGIN in plugins:
        fused = bool(cfg.bool("liger_fused_linear_cross_entropy"))
        on = [k for k in ("liger_rms_norm", "liger_glu_activation", "liger_swiglu", "liger_rope") if cfg.bool(k)]
        loss_key = "liger_fused_linear_cross_entropy" if cfg.has("liger_fused_linear_cross_entropy") else "plugins"
        shared.liger(m, cfg.origin(loss_key), fused, bool(on), cfg.origin(on[0] if on else "plugins"))
    elif liger_keys:
        m.notes.append(f"{', '.join(liger_keys[:3])} in {cfg.file} act only with {LIGER_PLUGIN}.LigerPlugin in "
                       "plugins; left out.")
    if CCE_PLUGIN in plugins and cfg.bool("cut_cross_entropy") is not False:   # integrations/.../args.py: True
        origin = cfg.origin("cut_cross_entropy" if cfg.has("cut_cross_entropy") else "plugins")
        m.set("loss", Loss.CCE, origin)
    m.default("loss", Loss.STANDARD, "no loss plugin")
    m.default("liger_kernels", False, "no Liger plugin")


def _engines(m: Mapping, cfg: Keys, method: Method) -> None:
    """deepspeed: a JSON path (or mapping); fsdp_config / fsdp, handed to the Trainer with version 1 unless
    fsdp_version says 2."""
    deepspeed = cfg.raw("deepspeed")
    if deepspeed:
        m.deepspeed_refs.append((cfg.origin("deepspeed"), deepspeed))
    if cfg.has("ddp_bucket_cap_mb"):
        m.set("engine.ddp_bucket_cap_mb", cfg.int("ddp_bucket_cap_mb", 1, 10**6), cfg.origin("ddp_bucket_cap_mb"))
    section = cfg.sub("fsdp_config")
    words = cfg.names("fsdp") or ()
    if section is None and not words and not cfg.has("fsdp_version"):
        return
    section = section or Keys({}, cfg.file, "fsdp_config.")
    version = (cfg.int("fsdp_version", 1, 2), cfg.origin("fsdp_version")) if cfg.has("fsdp_version") else None
    origin = cfg.origin("fsdp_config" if cfg.has("fsdp_config") else "fsdp" if words else "fsdp_version")
    fsdp.read(m, section, fsdp.AXOLOTL, origin, words, version)
