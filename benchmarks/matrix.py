"""The benchmark matrix: the configurations `fitplan bench` measures and predicts.

Catalog models from 0.35B to 70B in four size tiers. Every model of a tier runs the tier's recipes, so
families can be compared on the same settings; bigger tiers use shorter sequences (a fake-tensor step
costs time per operator, and 70B full fine-tuning at long sequences would only repeat what 7B shows).

Exceptions, each explained where it is made: Gemma-2 and DeepSeek-V3 run eager attention everywhere, GPT-2 skips
QLoRA, the older MoE models add two bf16-true cells and the 2025 MoE models run bf16-true cells only.

Each configuration has a stable id (a hash of its fields) and a half, "tune" or "holdout", drawn from
that id with a seed fixed here, before any calibration: a config keeps its half when others are added.
Imports no torch.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass

from planner.config import TrainConfig

SEED = 20240611          # fixed: changing it reshuffles the halves and voids any calibration made on "tune"
HALVES = ("tune", "holdout")
LATER_AXES = {"loss": "standard", "loop": "trainer", "activation_offload": "none", "batching": "fixed",
              "liger_kernels": False}


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark cell: a catalog model and the training settings the matrix varies."""

    model: str
    method: str
    precision: str
    optimizer: str
    micro_batch: int
    seq_len: int
    grad_ckpt: bool
    attn: str = "sdpa"
    double_quant: bool = True
    lora_r: int = 16
    lora_targets: str = "all-linear"
    # axes added later; at their defaults they stay out of the id, so earlier cells keep their id and half
    loss: str = "standard"
    loop: str = "trainer"
    activation_offload: str = "none"
    batching: str = "fixed"
    liger_kernels: bool = False

    @property
    def id(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if not (k in LATER_AXES and v == LATER_AXES[k])}
        blob = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def axis(self) -> str:
        """The later axis this cell varies ("loss=liger"), or "base"."""
        changed = [f"{k}={getattr(self, k)}" for k, default in LATER_AXES.items() if getattr(self, k) != default]
        return ",".join(changed) or "base"

    @property
    def half(self) -> str:
        return HALVES[random.Random(f"{SEED}:{self.id}").random() >= 0.5]

    def train_config(self) -> TrainConfig:
        return TrainConfig(method=self.method, precision=self.precision, optimizer=self.optimizer,
                           micro_batch=self.micro_batch, seq_len=self.seq_len, grad_ckpt=self.grad_ckpt,
                           attn=self.attn, double_quant=self.double_quant, lora_r=self.lora_r,
                           lora_alpha=2 * self.lora_r, lora_targets=tuple(self.lora_targets.split(",")),
                           loss=self.loss, loop=self.loop, activation_offload=self.activation_offload,
                           batching=self.batching, liger_kernels=self.liger_kernels)

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        name = self.model.split("/")[-1]
        bits = [name, self.method, self.precision, self.optimizer, f"b{self.micro_batch}", f"s{self.seq_len}"]
        bits += ["ckpt"] if self.grad_ckpt else []
        bits += [self.attn] if self.attn != "sdpa" else []
        bits += ["no-dq"] if self.method == "qlora" and not self.double_quant else []
        bits += [] if self.axis == "base" else [self.axis]
        return " ".join(bits)


# (method, precision, optimizer, micro_batch, seq_len, grad_ckpt, attn, double_quant)
Recipe = tuple[str, str, str, int, int, bool, str, bool]

SMALL_RECIPES: list[Recipe] = [
    ("full", "bf16-true", "adamw", 4, 1024, False, "sdpa", True),
    ("full", "bf16-mixed", "adamw", 2, 2048, True, "sdpa", True),
    ("full", "fp32", "sgd", 1, 512, False, "eager", True),
    ("full", "bf16-true", "adamw8bit", 8, 512, True, "sdpa", True),
    ("full", "bf16-mixed", "adafactor", 1, 4096, True, "sdpa", True),
    ("lora", "bf16-true", "adamw", 8, 2048, False, "sdpa", True),
    ("lora", "bf16-mixed", "adamw", 16, 256, False, "eager", True),
    ("lora", "bf16-true", "sgd", 1, 8192, True, "sdpa", True),
    ("lora", "fp32", "adamw", 4, 512, False, "sdpa", True),
    ("qlora", "bf16-true", "adamw", 4, 2048, True, "sdpa", True),
    ("qlora", "bf16-mixed", "adamw", 2, 1024, False, "sdpa", False),
    ("qlora", "bf16-true", "adamw8bit", 1, 4096, True, "sdpa", True),
]
MEDIUM_RECIPES: list[Recipe] = [
    ("full", "bf16-true", "adamw", 1, 2048, True, "sdpa", True),
    ("full", "bf16-mixed", "adamw", 1, 1024, True, "sdpa", True),
    ("full", "bf16-true", "sgd", 2, 512, False, "sdpa", True),
    ("lora", "bf16-true", "adamw", 4, 2048, True, "sdpa", True),
    ("lora", "bf16-mixed", "adamw", 1, 4096, False, "sdpa", True),
    ("lora", "bf16-true", "sgd", 8, 8192, True, "sdpa", True),
    ("lora", "bf16-true", "adamw", 4, 512, False, "eager", True),
    ("qlora", "bf16-true", "adamw", 4, 2048, True, "sdpa", True),
    ("qlora", "bf16-mixed", "adamw8bit", 1, 8192, True, "sdpa", True),
    ("qlora", "bf16-true", "adafactor", 2, 1024, False, "sdpa", False),
]
LARGE_RECIPES: list[Recipe] = [
    ("lora", "bf16-true", "adamw", 1, 2048, True, "sdpa", True),
    ("lora", "bf16-mixed", "sgd", 4, 1024, False, "sdpa", True),
    ("qlora", "bf16-true", "adamw", 2, 4096, True, "sdpa", True),
    ("qlora", "bf16-true", "adamw8bit", 1, 1024, False, "sdpa", False),
    ("full", "bf16-true", "adamw", 1, 512, True, "sdpa", True),
    ("full", "bf16-mixed", "sgd", 1, 256, False, "eager", True),
]
HUGE_RECIPES: list[Recipe] = [
    ("lora", "bf16-true", "adamw", 1, 1024, True, "sdpa", True),
    ("qlora", "bf16-true", "adamw", 1, 2048, True, "sdpa", True),
    ("qlora", "bf16-mixed", "sgd", 2, 512, False, "sdpa", False),
    ("full", "bf16-true", "adamw", 1, 256, True, "sdpa", True),
    ("full", "bf16-true", "sgd", 1, 512, False, "sdpa", True),
]

# The 2025 MoE models run only what transformers can train them with: bf16-true experts (grouped_mm, bf16 only;
# Llama-4's batched matmuls would take fp32, but the planner keeps every MoE model to bf16-true), no QLoRA
MOE_2025_RECIPES: list[Recipe] = [
    ("lora", "bf16-true", "adamw", 1, 1024, True, "sdpa", True),
    ("lora", "bf16-true", "sgd", 2, 512, False, "sdpa", True),
    ("full", "bf16-true", "sgd", 1, 256, False, "eager", True),
]

TIERS: list[tuple[list[str], list[Recipe]]] = [
    # ~0.3-3B; tied embeddings: Llama-3.2-1B, Qwen2.5-0.5B/1.5B, gemma-2b, gemma-2-2b, gpt2-medium
    (["meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B", "google/gemma-2b",
      "google/gemma-2-2b", "microsoft/phi-2", "EleutherAI/pythia-1b", "allenai/OLMo-2-0425-1B",
      "openai-community/gpt2-medium",
      # 2025: gemma-3 (5 sliding : 1 full layers), SmolLM3 (NoPE layers), Phi-4-mini (3/4 rotary, tied)
      "google/gemma-3-270m", "HuggingFaceTB/SmolLM3-3B", "microsoft/Phi-4-mini-instruct"], SMALL_RECIPES),
    # ~4-8B
    (["Qwen/Qwen3-4B", "meta-llama/Llama-2-7b-hf", "mistralai/Mistral-7B-v0.1", "meta-llama/Llama-3.1-8B",
      "microsoft/Phi-3-mini-4k-instruct",
      # 2025: OLMo-3 (sliding and full layers, fp32 rotary), Ministral-8B
      "allenai/Olmo-3-1025-7B", "mistralai/Ministral-8B-Instruct-2410"], MEDIUM_RECIPES),
    # ~14-47B, two MoE
    (["Qwen/Qwen2.5-14B", "01-ai/Yi-34B", "Qwen/Qwen2.5-32B", "mistralai/Mixtral-8x7B-v0.1",
      "Qwen/Qwen3-30B-A3B",
      # 2025: Mistral-Small-24B (q narrower than hidden), Seed-OSS-36B (dropout masks)
      "mistralai/Mistral-Small-24B-Base-2501", "ByteDance-Seed/Seed-OSS-36B-Instruct"], LARGE_RECIPES),
    # 70B
    (["meta-llama/Llama-2-70b-hf", "meta-llama/Llama-3.1-70B"], HUGE_RECIPES),
    # 2025 MoE, 21-671B: sinks and biased experts, every-expert routing with NoPE, DeltaNet with gated attention, MLA
    (["openai/gpt-oss-20b", "meta-llama/Llama-4-Scout-17B-16E", "Qwen/Qwen3-Next-80B-A3B-Instruct",
      "deepseek-ai/DeepSeek-V3"], MOE_2025_RECIPES),
]


# GPT-2's projections are Conv1D: bitsandbytes quantizes them, the NF4 stand-in only replaces nn.Linear
NO_QLORA = {"openai-community/gpt2-medium"}
# MoE models also run these bf16-true cells: transformers 5 runs the experts with torch._grouped_mm, which takes
# bf16 only, so the tier's bf16-mixed and QLoRA (experts cast to fp32) cells fail to measure; they stay in the
# matrix as failures to show it
MOE_RECIPES: list[Recipe] = [
    ("lora", "bf16-true", "sgd", 4, 1024, False, "sdpa", True),
    ("full", "bf16-true", "sgd", 1, 256, False, "eager", True),
]


# The later axes: each on models of two sizes and methods, where it changes the peak most
AXIS_MODELS = ["meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-1.5B", "meta-llama/Llama-3.1-8B"]
AXIS_RECIPES: list[tuple[str, str, int, int, bool, dict]] = [   # method, precision, micro-batch, seq, ckpt, axis
    ("lora", "bf16-true", 2, 2048, False, {"loss": "liger"}),
    ("full", "bf16-mixed", 1, 1024, True, {"loss": "liger"}),
    ("qlora", "bf16-true", 2, 2048, True, {"loss": "liger"}),
    ("lora", "bf16-true", 4, 1024, False, {"loss": "cce"}),
    ("full", "bf16-true", 1, 2048, True, {"loss": "cce"}),
    ("lora", "bf16-mixed", 2, 2048, False, {"loop": "plain"}),
    ("qlora", "bf16-true", 4, 1024, True, {"loop": "plain"}),
    ("lora", "bf16-true", 2, 2048, False, {"activation_offload": "all"}),
    ("qlora", "bf16-mixed", 2, 2048, False, {"activation_offload": "all"}),
    ("full", "bf16-true", 1, 2048, True, {"activation_offload": "checkpoints"}),
    ("full", "bf16-true", 2, 1024, True, {"optimizer": "adamw_fused"}),
    # batching: SDPA's b x 1 x s x s mask, its saved bias per layer and repeat_kv's copies (all three GQA); flash on
    # padded rows is measured per layer only (tests/test_layer_saved.py): unpadding reads the mask's values (nonzero,
    # max), which fake tensors cannot
    ("lora", "bf16-true", 4, 1024, False, {"batching": "padded"}),
    ("full", "bf16-true", 4, 2048, False, {"batching": "padded"}),
    ("qlora", "bf16-true", 2, 2048, False, {"batching": "padded"}),
    ("lora", "bf16-mixed", 2, 2048, False, {"batching": "packed"}),
    ("qlora", "bf16-true", 4, 1024, True, {"batching": "packed"}),
    # Liger's RMSNorm, SwiGLU and RoPE kernels (measure/liger_kernels.py), alone and with its fused loss
    ("lora", "bf16-true", 2, 2048, False, {"liger_kernels": True}),
    ("full", "bf16-true", 2, 1024, False, {"liger_kernels": True}),
    ("qlora", "bf16-mixed", 2, 2048, False, {"liger_kernels": True}),
    ("lora", "bf16-mixed", 4, 2048, False, {"liger_kernels": True, "loss": "liger"}),
    ("lora", "bf16-true", 4, 1024, False, {"liger_kernels": True, "batching": "padded"}),
]


def axis_cells() -> list[BenchConfig]:
    out = []
    for model in AXIS_MODELS:
        for method, precision, mb, seq, ckpt, axis in AXIS_RECIPES:
            fields = {"optimizer": "adamw", **axis}
            out.append(BenchConfig(model, method, precision, fields.pop("optimizer"), mb, seq, ckpt, **fields))
    return out


def matrix() -> list[BenchConfig]:
    """Every configuration, in a fixed order (tier, model, recipe), then the later axes' cells."""
    from profiles.models import from_name
    out = []
    for models, recipes in TIERS:
        for model in models:
            # attention soft-capping (Gemma-2): transformers refuses SDPA, so users run eager at any length;
            # MLA (DeepSeek-V3): the CPU's SDPA falls back to its fp32 math kernel for q/k heads wider than v,
            # where CUDA runs the memory-efficient kernel the planner models, so the harness measures eager
            spec = from_name(model)
            eager_only = spec.attn_softcap is not None or spec.is_mla
            extra = MOE_RECIPES if spec.is_moe and recipes is not MOE_2025_RECIPES else []
            for method, precision, optimizer, mb, seq, ckpt, attn, dq in recipes + extra:
                if method == "qlora" and model in NO_QLORA:
                    continue
                attn = "eager" if eager_only else attn
                out.append(BenchConfig(model, method, precision, optimizer, mb, seq, ckpt, attn, dq))
    return out + axis_cells()


def family(config: BenchConfig) -> str:
    from profiles.models import from_name
    return from_name(config.model).family


def select(configs: list[BenchConfig], *, families=(), methods=(), ids=(), half: str | None = None,
           limit: int | None = None) -> list[BenchConfig]:
    """The configurations that pass every filter given (empty filters pass all), at most `limit`."""
    families, methods, ids = {f.lower() for f in families}, {m.lower() for m in methods}, set(ids)
    chosen = [c for c in configs
              if (not families or family(c).lower() in families)
              and (not methods or c.method in methods)
              and (not ids or c.id in ids or any(c.id.startswith(i) for i in ids))
              and (half is None or c.half == half)]
    return chosen[:limit] if limit is not None else chosen
