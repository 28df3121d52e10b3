"""The architecture of a decoder-only language model, as fitplan counts and walks it: `ModelSpec`.

Numbers (layers, widths, heads, vocabulary, experts) and family traits (how the Hugging Face implementation
computes where that changes what autograd keeps). A new family is a catalog entry, plus at most a new trait.
Imports nothing heavy: planning must answer in well under a second.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Module names of each layout, as the Hugging Face implementation calls them (LoRA targets these).
LAYOUTS: dict[str, dict[str, str]] = {
    # q,k,v,o separate; gated MLP (SwiGLU / GeGLU)
    "llama": {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
              "gate": "gate_proj", "up": "up_proj", "down": "down_proj"},
    # phi-1.5 / phi-2: separate q,k,v, `dense` output, plain MLP fc1 -> fc2
    "phi": {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "dense", "up": "fc1", "down": "fc2"},
    # Phi-3: fused qkv and fused gate_up
    "phi3": {"qkv": "qkv_proj", "o": "o_proj", "gate_up": "gate_up_proj", "down": "down_proj"},
    # GPT-NeoX / Falcon: fused query_key_value, plain MLP
    "neox": {"qkv": "query_key_value", "o": "dense", "up": "dense_h_to_4h", "down": "dense_4h_to_h"},
    # GPT-2: fused c_attn (Conv1D), c_proj, c_fc, mlp c_proj
    "gpt2": {"qkv": "c_attn", "o": "c_proj", "up": "c_fc", "down": "c_proj"},
}

# Which roles a fused projection serves, so the aliases q,k,v,gate,up reach fused modules too.
FUSED_ROLES = {"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")}
NORM_PLACEMENTS = ("pre", "sandwich", "post")


@dataclass(frozen=True)
class Linear:
    """One linear projection of a transformer layer."""

    role: str          # q, k, v, o, qkv, gate, up, gate_up, down, router
    module: str        # the Hugging Face module name (a LoRA target)
    d_in: int
    d_out: int
    bias: bool
    experts: int = 1   # copies per layer (routed MoE experts)

    @property
    def params(self) -> int:
        return self.experts * (self.d_in * self.d_out + (self.d_out if self.bias else 0))


@dataclass(frozen=True)
class ModelSpec:
    """Architecture numbers of one decoder-only language model."""

    name: str                      # Hugging Face id
    hf_type: str                   # transformers `model_type`
    family: str
    n_layer: int
    hidden: int
    intermediate: int
    n_head: int
    vocab: int
    source: str = ""               # where the numbers come from
    n_kv_head: int | None = None   # defaults to n_head (no GQA)
    head_dim: int | None = None    # defaults to hidden // n_head
    layout: str = "llama"          # a key of LAYOUTS
    mlp_gated: bool = True         # SwiGLU / GeGLU (gate, up, down) or plain (up, down)
    activation: str = "silu"
    norm: str = "rmsnorm"          # rmsnorm | layernorm
    norm_bias: bool = False        # LayerNorm with bias
    norms_per_layer: int = 2       # Gemma-2/3 and OLMo-2 have more, parallel blocks fewer
    qk_norm: str | None = None     # "head": per-head RMSNorm (Qwen3, Gemma-3); "full": over all heads (OLMo-2)
    parallel_block: bool = False   # attention and MLP read the same normalised input (Phi, Falcon, NeoX)
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False
    tied_embeddings: bool = False
    learned_positions: int = 0     # rows of a learned position embedding (GPT-2)
    final_norm: bool = True
    n_experts: int = 0             # routed experts (0: dense)
    experts_per_token: int = 0
    moe_intermediate: int | None = None
    partial_rotary: float = 1.0
    sliding_window: int | None = None
    max_position: int = 4096
    logit_softcap: float | None = None
    dropout: float = 0.0           # residual and embedding dropout while training (GPT-2: 0.1)
    attn_softcap: float | None = None  # attention-score soft-capping (Gemma-2): rules out SDPA, runs eager
    # Family traits: how the Hugging Face implementation computes, where it changes what autograd keeps.
    norm_placement: str = "pre"    # pre | sandwich (also after each sub-block: Gemma-2/3) | post (OLMo-2)
    norm_weight_fp32: bool = False  # RMSNorm multiplies its weight in fp32, then casts (Gemma, OLMo-2)
    norm_weight_offset: bool = False  # RMSNorm scales by (1 + weight), kept in fp32 for backward (Gemma)
    rope_by_cat: bool = False      # rotary applied through torch.cat even over the whole head (Phi-3)
    softmax_in_scores_dtype: bool = False  # eager softmax keeps the scores' dtype, not fp32 (GPT-2, Falcon)
    sdpa_always_masked: bool = False  # SDPA always gets an explicit mask, never is_causal (Falcon)
    hf_overrides: dict = field(default_factory=dict, compare=False, hash=False)  # extra config.json keys

    def __post_init__(self) -> None:
        missing = [f for f in ("n_layer", "hidden", "intermediate", "n_head", "vocab") if getattr(self, f) <= 0]
        if missing or self.layout not in LAYOUTS or self.norm_placement not in NORM_PLACEMENTS:
            raise ValueError(f"model spec {self.name!r} is incomplete or inconsistent: "
                             f"{missing or self.layout or self.norm_placement}")
        if self.n_kv_head is None:
            object.__setattr__(self, "n_kv_head", self.n_head)
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden // self.n_head)
        if self.n_head % self.n_kv_head:
            raise ValueError(f"model spec {self.name!r}: {self.n_head} heads do not split into {self.n_kv_head} KV groups")
        if self.n_experts and self.moe_intermediate is None:
            object.__setattr__(self, "moe_intermediate", self.intermediate)

    @property
    def short_name(self) -> str:
        return self.name.split("/")[-1]

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def q_dim(self) -> int:
        return self.n_head * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_head * self.head_dim

    def linears(self) -> list[Linear]:
        """The linear projections of one layer, with their Hugging Face module names."""
        names = LAYOUTS[self.layout]
        out = self._attention_linears(names)
        out += self._mlp_linears(names)
        return out

    def _attention_linears(self, names: dict[str, str]) -> list[Linear]:
        h, qb = self.hidden, self.qkv_bias
        if "qkv" in names:
            fused = Linear("qkv", names["qkv"], h, self.q_dim + 2 * self.kv_dim, qb)
            qkv = [fused]
        else:
            qkv = [Linear("q", names["q"], h, self.q_dim, qb), Linear("k", names["k"], h, self.kv_dim, qb),
                   Linear("v", names["v"], h, self.kv_dim, qb)]
        return qkv + [Linear("o", names["o"], self.q_dim, h, self.o_bias)]

    def _mlp_linears(self, names: dict[str, str]) -> list[Linear]:
        h, b = self.hidden, self.mlp_bias
        if self.is_moe:
            i, e = self.moe_intermediate, self.n_experts
            return [Linear("router", "gate", h, e, False),
                    Linear("gate_up", "experts.gate_up_proj", h, 2 * i, b, experts=e),
                    Linear("down", "experts.down_proj", i, h, b, experts=e)]
        i = self.intermediate
        if "gate_up" in names:
            return [Linear("gate_up", names["gate_up"], h, 2 * i, b), Linear("down", names["down"], i, h, b)]
        up = [Linear("gate", names["gate"], h, i, b)] if self.mlp_gated else []
        return up + [Linear("up", names["up"], h, i, b), Linear("down", names["down"], i, h, b)]

    def norm_params(self) -> int:
        """Parameters of all normalisation layers (per-layer norms, QK norms and the final norm)."""
        per_norm = self.hidden * (2 if self.norm_bias else 1)
        qk = {None: 0, "head": 2 * self.head_dim, "full": self.q_dim + self.kv_dim}[self.qk_norm]
        per_layer = self.norms_per_layer * per_norm + qk
        return self.n_layer * per_layer + (per_norm if self.final_norm else 0)

    def embedding_params(self) -> int:
        """Input embedding, learned positions and (when untied) the output head."""
        embed = self.vocab * self.hidden + self.learned_positions * self.hidden
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return embed + head + (self.vocab if self.lm_head_bias else 0)

    def layer_linear_params(self) -> int:
        return sum(lin.params for lin in self.linears())

    @property
    def params(self) -> int:
        """Exact parameter count, as `sum(p.numel() for p in model.parameters())` in transformers."""
        return self.n_layer * self.layer_linear_params() + self.norm_params() + self.embedding_params()
