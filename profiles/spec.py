"""The architecture of a decoder-only language model, as fitplan counts and walks it: `ModelSpec`.

Numbers (layers, widths, heads, vocabulary, experts) and family traits (how the Hugging Face implementation
computes where that changes what autograd keeps). A new family is a catalog entry, plus at most a new trait.
Imports nothing heavy: planning must answer in well under a second.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

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
FUSED_ROLES = {"qkv": ("q", "k", "v"), "kv": ("k", "v"), "gate_up": ("gate", "up")}
NORM_PLACEMENTS = ("pre", "sandwich", "post")
QK_NORMS = (None, "head", "full", "weightless")
# config.json's layer_types values -> how the layer attends
ATTENTION_TYPES = {"full_attention": "full", "sliding_attention": "sliding", "chunked_attention": "chunked",
                   "linear_attention": "linear"}
# How an MoE router turns logits into routing weights (and which tokens each expert runs).
ROUTERS = (
    "softmax",        # softmax over all experts, then top-k (Mixtral, Qwen3-MoE, Qwen3-Next)
    "softmax_topk",   # top-k logits, then softmax over those (gpt-oss)
    "sigmoid_group",  # fp32 sigmoid scores, group-limited top-k, renormalised and scaled (DeepSeek-V3)
    "sigmoid_all",    # sigmoid of the top-k logits, -inf elsewhere; every expert runs every token (Llama-4)
)


@dataclass(frozen=True)
class Linear:
    """One linear projection of a transformer layer."""

    role: str          # q, k, v, o, qkv, kv, gate, up, gate_up, down, router
    module: str        # the Hugging Face module name (a LoRA target)
    d_in: int
    d_out: int
    bias: bool
    experts: int = 1   # copies per layer (routed MoE experts)

    @property
    def params(self) -> int:
        return self.experts * (self.d_in * self.d_out + (self.d_out if self.bias else 0))


@dataclass(frozen=True)
class LayerKind:
    """What sets one decoder layer apart from another of the same model."""

    attention: str = "full"   # full | sliding | chunked | linear (a value of ATTENTION_TYPES)
    rope: bool = True         # rotary positions (NoPE layers: False)
    moe: bool = False         # routed experts (False: a dense MLP)


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
    qk_norm: str | None = None     # "head": per-head RMSNorm (Qwen3, Gemma-3); "full": over all heads (OLMo-2);
                                   # "weightless": per-head RMS scaling without weights, rotary layers only (Llama-4)
    parallel_block: bool = False   # attention and MLP read the same normalised input (Phi, Falcon, NeoX)
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False         # for MoE models: biases on the experts (gpt-oss)
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
    dropout_on_embeddings: bool = True  # the embeddings' output is dropped out too (GPT-2; not Seed-OSS)
    attn_softcap: float | None = None  # attention-score soft-capping (Gemma-2): rules out SDPA, runs eager
    # Layers that differ: each pattern repeats over the layers (layer i reads entry i % len) and is kept as
    # its shortest period, so a preset shrunk to fewer layers keeps a consistent pattern.
    layer_types: tuple[str, ...] = ()  # keys of ATTENTION_TYPES; (): every layer full, or sliding with a window
    no_rope_layers: tuple[int, ...] = ()  # 1: rotary, 0: none (NoPE), as config.json spells it; (): all rotary
    first_dense_layers: int = 0    # MoE models: the first k layers have a dense MLP of width `intermediate`
    attention_chunk: int | None = None  # chunked_attention layers attend within blocks of this many tokens
    # Attention variants
    attn_sinks: bool = False       # a learned per-head sink logit joins every softmax (gpt-oss)
    attn_temperature: bool = False  # NoPE layers scale q by a per-position temperature (Llama-4)
    gated_attention: bool = False  # q_proj also yields a per-element sigmoid output gate (Qwen3-Next)
    # Multi-head latent attention (DeepSeek-V3): low-rank q and a compressed, shared KV latent; 0: not MLA
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    # Gated DeltaNet linear attention (Qwen3-Next's linear_attention layers)
    linear_k_heads: int = 0
    linear_v_heads: int = 0
    linear_k_head_dim: int = 0
    linear_v_head_dim: int = 0
    linear_conv_kernel: int = 0
    # MoE variants
    router: str = "softmax"        # a value of ROUTERS
    router_bias: bool = False
    norm_topk_prob: bool = False   # the chosen experts' weights are renormalised to sum to 1 (a division, kept)
    router_module: str = "gate"    # what the MoE block calls its router (gpt-oss, Llama-4: "router")
    n_group: int = 1               # sigmoid_group: experts fall in n_group groups, the best topk_group are searched
    topk_group: int = 1
    shared_expert_intermediate: int = 0  # width of the always-on shared expert(s) (0: none)
    shared_expert_gate: bool = False  # a sigmoid of Linear(hidden, 1) scales the shared expert (Qwen3-Next)
    swiglu_limit: float | None = None  # the experts' SwiGLU clamps gate and up to this (gpt-oss)
    # peft 0.21 rewrites gate_proj/up_proj/down_proj targets of qwen2_moe-style types into the routed experts' fused
    # parameters (a transformers v4 -> v5 compatibility map), so LoRA cannot reach their dense and shared MLPs by name
    peft_remaps_mlp: bool = False
    # Family traits: how the Hugging Face implementation computes, where it changes what autograd keeps.
    norm_placement: str = "pre"    # pre | sandwich (also after each sub-block: Gemma-2/3) | post (OLMo-2)
    norm_weight_fp32: bool = False  # RMSNorm multiplies its weight in fp32, then casts (Gemma, OLMo-2)
    norm_weight_offset: bool = False  # RMSNorm scales by (1 + weight), kept in fp32 for backward (Gemma)
    rope_by_cat: bool = False      # rotary applied through torch.cat even over the whole head (Phi-3)
    rope_fp32: bool = False        # cos and sin stay fp32, so rotary runs in fp32 and casts back (OLMo-3)
    softmax_in_scores_dtype: bool = False  # eager softmax keeps the scores' dtype, not fp32 (GPT-2, Falcon)
    sdpa_always_masked: bool = False  # SDPA always gets an explicit mask, never is_causal (Falcon)
    hf_overrides: dict = field(default_factory=dict, compare=False, hash=False)  # extra config.json keys
    note: str = field(default="", compare=False, hash=False)  # what a user should know (how it loads, what is left out)

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
        self._check_variants()
        for name in ("layer_types", "no_rope_layers"):  # one period, as long as the layers allow
            object.__setattr__(self, name, shortest_period(tuple(getattr(self, name)), self.n_layer))
        if self.no_rope_layers == (1,):
            object.__setattr__(self, "no_rope_layers", ())  # rotary everywhere: the default

    def _check_variants(self) -> None:
        bad = [f"layer type {t!r}" for t in self.layer_types if t not in ATTENTION_TYPES]
        bad += [f"qk_norm {self.qk_norm!r}"] if self.qk_norm not in QK_NORMS else []
        bad += [f"router {self.router!r}"] if self.router not in ROUTERS else []
        bad += ["no_rope_layers (1 or 0 each)"] if any(v not in (0, 1) for v in self.no_rope_layers) else []
        if "linear_attention" in self.layer_types and not (self.linear_k_heads and self.linear_v_heads
                                                             and self.linear_v_heads % self.linear_k_heads == 0):
            bad.append("linear attention heads")
        if self.kv_lora_rank and not (self.qk_rope_head_dim and self.qk_nope_head_dim and self.v_head_dim):
            bad.append("latent attention head widths")
        if bad:
            raise ValueError(f"model spec {self.name!r} is inconsistent: {', '.join(bad)}")

    @property
    def short_name(self) -> str:
        return self.name.split("/")[-1]

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def q_dim(self) -> int:
        return self.n_head * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_head * self.head_dim

    @property
    def attn_out_dim(self) -> int:
        """Width of the attention output that o_proj reads (MLA's value heads are narrower than its q/k heads)."""
        return self.n_head * self.v_head_dim if self.is_mla else self.q_dim

    # --- layers ---------------------------------------------------------------------------------------

    def layer_kind(self, layer: int) -> LayerKind:
        if self.layer_types:
            attention = ATTENTION_TYPES[self.layer_types[layer % len(self.layer_types)]]
        else:
            attention = "sliding" if self.sliding_window else "full"
        rope = not self.learned_positions and (not self.no_rope_layers
                                               or bool(self.no_rope_layers[layer % len(self.no_rope_layers)]))
        return LayerKind(attention, rope, self.is_moe and layer >= self.first_dense_layers)

    def layer_kinds(self) -> tuple[tuple[LayerKind, int], ...]:
        """(kind, how many layers) in order of first appearance; one entry for a uniform model."""
        return _layer_kinds(self)

    def linears(self, layer: int | None = None) -> list[Linear]:
        """The linear projections of layer `layer` with their Hugging Face module names. Without a layer: every
        distinct projection of any layer (what LoRA targets can name; the same as any layer's when they all agree)."""
        if layer is not None:
            return list(_kind_linears(self, self.layer_kind(layer)))
        return list(_all_linears(self))

    def kind_linears(self, kind: LayerKind) -> list[Linear]:
        return list(_kind_linears(self, kind))

    def layer_linears(self) -> list[tuple[Linear, int]]:
        """(linear, how many layers have it) over the whole model: what per-model sums multiply."""
        count: dict[Linear, int] = {}
        for kind, layers in self.layer_kinds():
            for lin in _kind_linears(self, kind):
                count[lin] = count.get(lin, 0) + layers
        return list(count.items())

    def _kind_linears(self, kind: LayerKind) -> tuple[Linear, ...]:
        names = LAYOUTS[self.layout]
        return tuple(self._attention_linears(names, kind) + self._mlp_linears(names, kind))

    def _attention_linears(self, names: dict[str, str], kind: LayerKind) -> list[Linear]:
        if kind.attention == "linear":
            return self._delta_net_linears()
        if self.is_mla:
            return self._latent_attention_linears()
        h, qb = self.hidden, self.qkv_bias
        q_out = self.q_dim * (2 if self.gated_attention else 1)  # the output gate rides on q_proj
        if "qkv" in names:
            qkv = [Linear("qkv", names["qkv"], h, q_out + 2 * self.kv_dim, qb)]
        else:
            qkv = [Linear("q", names["q"], h, q_out, qb), Linear("k", names["k"], h, self.kv_dim, qb),
                   Linear("v", names["v"], h, self.kv_dim, qb)]
        return qkv + [Linear("o", names["o"], self.q_dim, h, self.o_bias)]

    def _latent_attention_linears(self) -> list[Linear]:
        """DeepSeek's MLA: q through a low-rank bottleneck, k and v expanded from one compressed latent."""
        h, b, heads = self.hidden, self.qkv_bias, self.n_head
        qk_head = self.qk_nope_head_dim + self.qk_rope_head_dim
        if self.q_lora_rank:
            q = [Linear("q", "q_a_proj", h, self.q_lora_rank, b),
                 Linear("q", "q_b_proj", self.q_lora_rank, heads * qk_head, False)]
        else:
            q = [Linear("q", "q_proj", h, heads * qk_head, False)]
        kv = [Linear("kv", "kv_a_proj_with_mqa", h, self.kv_lora_rank + self.qk_rope_head_dim, b),
              Linear("kv", "kv_b_proj", self.kv_lora_rank, heads * (self.qk_nope_head_dim + self.v_head_dim), False)]
        return q + kv + [Linear("o", "o_proj", heads * self.v_head_dim, h, self.o_bias)]

    def _delta_net_linears(self) -> list[Linear]:
        """Qwen3-Next's Gated DeltaNet: q, k, v and the output gate z in one projection, beta and alpha in another."""
        k_dim, v_dim = self.linear_k_heads * self.linear_k_head_dim, self.linear_v_heads * self.linear_v_head_dim
        return [Linear("qkv", "in_proj_qkvz", self.hidden, 2 * k_dim + 2 * v_dim, False),
                Linear("qkv", "in_proj_ba", self.hidden, 2 * self.linear_v_heads, False),
                Linear("o", "out_proj", v_dim, self.hidden, False)]

    def _mlp_linears(self, names: dict[str, str], kind: LayerKind) -> list[Linear]:
        if not kind.moe:
            return self._dense_mlp(names, self.intermediate)
        h, i, e = self.hidden, self.moe_intermediate, self.n_experts
        routed = [Linear("router", self.router_module, h, e, self.router_bias),
                  Linear("gate_up", "experts.gate_up_proj", h, 2 * i, self.mlp_bias, experts=e),
                  Linear("down", "experts.down_proj", i, h, self.mlp_bias, experts=e)]
        if not self.shared_expert_intermediate:
            return routed
        shared = self._dense_mlp(names, self.shared_expert_intermediate)
        gate = [Linear("router", "shared_expert_gate", h, 1, False)] if self.shared_expert_gate else []
        return routed + shared + gate

    def _dense_mlp(self, names: dict[str, str], i: int) -> list[Linear]:
        h, b = self.hidden, self.mlp_bias and not self.is_moe  # an MoE model's mlp_bias is its experts'
        if "gate_up" in names:
            return [Linear("gate_up", names["gate_up"], h, 2 * i, b), Linear("down", names["down"], i, h, b)]
        up = [Linear("gate", names["gate"], h, i, b)] if self.mlp_gated else []
        return up + [Linear("up", names["up"], h, i, b), Linear("down", names["down"], i, h, b)]

    # --- parameter counts ---------------------------------------------------------------------------

    def norm_params(self) -> int:
        """Parameters of all normalisation layers (per-layer norms, QK and latent norms, the final norm)."""
        layers = sum(count * self._kind_norm_params(kind) for kind, count in self.layer_kinds())
        return layers + (self._per_norm if self.final_norm else 0)

    @property
    def _per_norm(self) -> int:
        return self.hidden * (2 if self.norm_bias else 1)

    def _kind_norm_params(self, kind: LayerKind) -> int:
        block = self.norms_per_layer * self._per_norm
        if kind.attention == "linear":
            return block + self.linear_v_head_dim  # the gated RMSNorm over each value head
        if self.is_mla:
            return block + self.q_lora_rank + self.kv_lora_rank  # q_a_layernorm, kv_a_layernorm
        qk = {None: 0, "weightless": 0, "head": 2 * self.head_dim, "full": self.q_dim + self.kv_dim}[self.qk_norm]
        return block + qk

    def extra_params(self) -> int:
        """Per-layer parameters that are neither linears nor norms: attention sinks, DeltaNet's conv and decay."""
        return sum(count * self._kind_extra_params(kind) for kind, count in self.layer_kinds())

    def _kind_extra_params(self, kind: LayerKind) -> int:
        if kind.attention == "linear":
            conv_channels = 2 * self.linear_k_heads * self.linear_k_head_dim + self.linear_v_heads * self.linear_v_head_dim
            return conv_channels * self.linear_conv_kernel + 2 * self.linear_v_heads  # conv1d, A_log, dt_bias
        return self.n_head if self.attn_sinks else 0

    def kind_params(self, kind: LayerKind) -> int:
        """Parameters of one layer of this kind."""
        linears = sum(lin.params for lin in _kind_linears(self, kind))
        return linears + self._kind_norm_params(kind) + self._kind_extra_params(kind)

    def embedding_params(self) -> int:
        """Input embedding, learned positions and (when untied) the output head."""
        embed = self.vocab * self.hidden + self.learned_positions * self.hidden
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return embed + head + (self.vocab if self.lm_head_bias else 0)

    def layer_linear_params(self) -> int:
        """Linear parameters of the largest layer (of every layer when they all agree)."""
        return max(sum(lin.params for lin in _kind_linears(self, kind)) for kind, _ in self.layer_kinds())

    @property
    def params(self) -> int:
        """Exact parameter count, as `sum(p.numel() for p in model.parameters())` in transformers."""
        linears = sum(lin.params * count for lin, count in self.layer_linears())
        return linears + self.norm_params() + self.extra_params() + self.embedding_params()


def shortest_period(pattern: tuple, n: int) -> tuple:
    """The shortest prefix of `pattern` (cycled over n layers) that, cycled, gives the same n entries."""
    if not pattern:
        return ()
    full = [pattern[i % len(pattern)] for i in range(n)]
    for p in range(1, n + 1):
        if all(full[i] == full[i % p] for i in range(n)):
            return tuple(full[:p])
    return tuple(full)


def expand(pattern: tuple, n: int) -> list:
    """A per-layer pattern written out for all n layers, as config.json lists it."""
    return [pattern[i % len(pattern)] for i in range(n)]


@lru_cache(maxsize=4096)
def _layer_kinds(spec: ModelSpec) -> tuple[tuple[LayerKind, int], ...]:
    counts: dict[LayerKind, int] = {}
    for layer in range(spec.n_layer):
        kind = spec.layer_kind(layer)
        counts[kind] = counts.get(kind, 0) + 1
    return tuple(counts.items())


@lru_cache(maxsize=4096)
def _kind_linears(spec: ModelSpec, kind: LayerKind) -> tuple[Linear, ...]:
    return spec._kind_linears(kind)


@lru_cache(maxsize=4096)
def _all_linears(spec: ModelSpec) -> tuple[Linear, ...]:
    return tuple(dict.fromkeys(lin for kind, _ in spec.layer_kinds() for lin in _kind_linears(spec, kind)))
