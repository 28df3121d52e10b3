"""The memory model against hand calculations and the literature (no torch needed)."""
import math

import pytest

from planner.config import TrainConfig
from planner.enums import Phase
from common.errors import InputError
from planner.memory import COMPONENTS, estimate
from planner.params import count_params, lora_params, numel, ordered_params, trainable_tensors
from planner.states import model_states, quant_constant_bytes, zero_partition
from profiles.models import catalog, from_name

LLAMA2_7B = from_name("meta-llama/Llama-2-7b-hf")
P = 6_738_415_616


def states(cfg, spec=LLAMA2_7B):
    return model_states(spec, cfg, count_params(spec, cfg))


def test_full_bf16_true_is_2_2_4_bytes_per_param():
    est = estimate(LLAMA2_7B, TrainConfig(method="full", precision="bf16-true", seq_len=256))
    step = est.phases[Phase.OPTIMIZER_STEP]
    assert (step["weights"], step["gradients"], step["optimizer_states"]) == (2 * P, 2 * P, 4 * P)
    assert step["master_weights"] == 0


def test_full_mixed_keeps_fp32_weights_grads_and_states():
    s = states(TrainConfig(method="full", precision="bf16-mixed"))
    assert (s.weights, s.gradients, s.optimizer_states) == (4 * P, 4 * P, 8 * P)


def test_zero_follows_deepspeed_bf16_16_bit_weights_fp32_masters_and_partition_gradients():
    # DeepSpeed bf16: 16-bit weights, fp32 master + Adam states, 16-bit gradients of the rank's partition
    cfg = TrainConfig(method="full", precision="bf16-mixed", gpus=8, sharding="zero2")
    s = states(cfg)
    assert s.weights == 2 * P
    assert s.master_weights == 4 * P // 8 and s.optimizer_states == 8 * P // 8
    # grads_in_partition: an eighth of the gradients, plus the tensors straddling the partition's edges whole
    largest = 32000 * 4096
    assert 2 * P // 8 < s.gradients <= 2 * (P // 8 + 2 * largest)
    step = estimate(LLAMA2_7B, cfg).phases[Phase.OPTIMIZER_STEP]
    assert step["gradients"] == s.gradients
    assert step["temporary"] == zero_partition(P, 8) * (2 + 4)   # the flattened gradients and their fp32 copy
    z3 = states(TrainConfig(method="full", precision="bf16-mixed", gpus=8, sharding="zero3"))
    assert z3.weights == 2 * P // 8


def test_zero1_shards_only_optimizer_side():
    s = states(TrainConfig(method="full", precision="bf16-mixed", gpus=4, sharding="zero1"))
    assert s.weights == 2 * P and s.optimizer_states == 8 * P // 4


def test_fsdp_shards_everything_in_its_own_precision():
    s = states(TrainConfig(method="full", precision="bf16-true", gpus=8, sharding="fsdp"))
    assert (s.weights, s.gradients, s.optimizer_states) == (2 * P // 8, 2 * P // 8, 4 * P // 8)


def test_offload_moves_states_to_cpu():
    on = states(TrainConfig(method="full", precision="bf16-mixed", gpus=8, sharding="zero3", offload="optimizer"))
    assert on.optimizer_states == 0 and on.master_weights == 0 and on.gradients == 0
    # Adam's fp32 states, the fp32 master and ZeRO-3's 16-bit gradient partitions, which live where the optimizer steps
    assert on.cpu == 8 * P // 8 + 4 * P // 8 + 2 * P // 8
    params = states(TrainConfig(method="full", precision="bf16-mixed", gpus=8, sharding="zero3", offload="params"))
    assert params.weights == 0 and params.cpu == on.cpu + 2 * P // 8


def test_ddp_keeps_gradient_buckets_in_every_phase():
    single = states(TrainConfig(method="full", gpus=1))
    cfg = TrainConfig(method="full", gpus=2, sharding="ddp")
    assert states(cfg).gradients == single.gradients
    # the Reducer's buckets are a second copy of every gradient, allocated when DDP wraps the model
    assert {phase: parts["comm_buffers"] for phase, parts in estimate(LLAMA2_7B, cfg).phases.items()} == \
        dict.fromkeys(Phase, single.gradients)
    assert all(parts["comm_buffers"] == 0 for parts in estimate(LLAMA2_7B, TrainConfig(method="full")).phases.values())


def test_qlora_weights_are_half_a_byte_plus_fp32_unquantized():
    cfg = TrainConfig(method="qlora", lora_targets=("q", "v"), lora_r=8)
    counts = count_params(LLAMA2_7B, cfg)
    embeddings = 2 * 32000 * 4096
    norms = 65 * 4096
    assert counts.quantized == P - embeddings - norms
    assert states(cfg).weights == counts.quantized // 2 + (embeddings + norms) * 4  # prepare_model_for_kbit casts to fp32


def test_double_quant_constants_match_the_arithmetic():
    on = quant_constant_bytes(LLAMA2_7B, TrainConfig(method="qlora"))
    off = quant_constant_bytes(LLAMA2_7B, TrainConfig(method="qlora", double_quant=False))
    q = count_params(LLAMA2_7B, TrainConfig(method="qlora")).quantized
    assert off == pytest.approx(q / 64 * 4, rel=1e-3)            # 32 bits per 64-block: 0.5 bit/param
    assert on * 8 / q == pytest.approx(8 / 64 + 32 / (64 * 256), rel=2e-3)  # ~0.127 bit/param


def test_lora_trainable_matches_the_contract_example():
    assert lora_params(LLAMA2_7B, TrainConfig(lora_targets=("q_proj", "v_proj"), lora_r=8)) == 4_194_304


def test_lora_adapters_and_states_are_fp32():
    s = states(TrainConfig(method="lora", lora_targets=("q", "v"), lora_r=8))
    assert s.adapters == 4_194_304 * 4 and s.optimizer_states == 2 * 4_194_304 * 4


@pytest.mark.parametrize("spec", list(catalog())[::7], ids=lambda s: s.short_name)
def test_trainable_tensors_cover_every_parameter(spec):
    assert sum(numel(shape) * c for shape, c in trainable_tensors(spec, TrainConfig(method="full"))) == spec.params


@pytest.mark.parametrize("spec", list(catalog()), ids=lambda s: s.short_name)
def test_ordered_params_follow_each_layer_and_sum_to_the_counts(spec):
    full = ordered_params(spec, TrainConfig(method="full"))
    assert sum(p.numel for p in full) == spec.params == count_params(spec, TrainConfig(method="full")).total
    for layer in range(spec.n_layer):  # a model whose layers differ lists each by its own kind
        assert sum(p.numel for p in full if p.layer == layer) == spec.kind_params(spec.layer_kind(layer))
    for method in ("lora", "qlora"):
        cfg = TrainConfig(method=method, lora_targets=("all-linear",))
        tensors, counts = ordered_params(spec, cfg), count_params(spec, cfg)
        assert sum(p.numel for p in tensors if p.trainable) == counts.trainable == counts.adapters
        assert sum(p.numel for p in tensors if not p.trainable) == spec.params
        assert sum(p.numel for p in tensors if p.quantized) == counts.quantized


def test_adam8bit_uses_two_bytes_plus_block_constants():
    full = states(TrainConfig(method="full", optimizer="adamw8bit"))
    assert full.optimizer_states == pytest.approx(2 * P * (1 + 4 / 256), rel=1e-3)


def test_paged_states_are_counted_outside_torch():
    s = states(TrainConfig(method="lora", optimizer="paged_adamw"))
    assert s.optimizer_states == 0 and s.paged > 0


def test_components_sum_to_the_peak_and_peak_is_the_largest_phase():
    for cfg in (TrainConfig(method="full", seq_len=256), TrainConfig(method="lora", seq_len=4096),
                TrainConfig(method="qlora", grad_ckpt=True, micro_batch=4)):
        est = estimate(LLAMA2_7B, cfg)
        assert set(est.components) == set(COMPONENTS)
        assert sum(est.components.values()) == est.allocated_peak_bytes
        assert est.allocated_peak_bytes == max(sum(p.values()) for p in est.phases.values())


def test_short_lora_peaks_late_long_lora_peaks_in_backward():
    assert estimate(LLAMA2_7B, TrainConfig(method="full", seq_len=128)).peak_phase is Phase.OPTIMIZER_STEP
    assert estimate(LLAMA2_7B, TrainConfig(method="lora", seq_len=4096)).peak_phase is Phase.BACKWARD


def test_checkpointing_keeps_layer_inputs_only():
    s, h = 2048, 4096
    forward = estimate(LLAMA2_7B, TrainConfig(method="lora", seq_len=s, grad_ckpt=True)).phases[Phase.FORWARD]
    inputs = 32 * 2 * s * h      # one bf16 hidden state per layer (Korthikanti: 2sbh per layer)
    final_norm = s * (4 * h + 4)  # the final RMSNorm's fp32 input and rsqrt (lm_head is frozen)
    ids = 3 * s * 8               # input_ids, labels and the shifted labels, int64
    assert forward["activations"] == inputs + final_norm + ids


def test_activations_scale_with_batch_and_sequence():
    a = estimate(LLAMA2_7B, TrainConfig(method="lora", seq_len=1024)).phases[Phase.FORWARD]["activations"]
    b = estimate(LLAMA2_7B, TrainConfig(method="lora", seq_len=1024, micro_batch=2)).phases[Phase.FORWARD]["activations"]
    assert b == pytest.approx(2 * a, rel=1e-3)


def test_logits_follow_the_fp32_loss_path():
    # at the loss's backward: log-softmax output, its gradient and the NLL gradient, all fp32 (12 b s V)
    est = estimate(LLAMA2_7B, TrainConfig(method="lora", seq_len=1024))
    assert est.phases[Phase.BACKWARD]["logits"] in (0, 12 * 1024 * 32000)
    assert est.phases[Phase.FORWARD]["logits"] == (2 + 4 + 4) * 1024 * 32000


def test_eager_attention_adds_the_scores():
    s, a, d = 1024, 32, 4096
    sdpa = estimate(LLAMA2_7B, TrainConfig(method="lora", seq_len=s)).phases[Phase.FORWARD]["activations"]
    eager = estimate(LLAMA2_7B, TrainConfig(method="lora", seq_len=s, attn="eager")).phases[Phase.FORWARD]["activations"]
    # per layer and token: fp32 softmax and its bf16 copy of a*s scores, instead of SDPA's fp32
    # log-sum-exp per head and its output (o_proj's LoRA keeps its own fp32 copy of the output)
    assert eager - sdpa == 32 * s * (a * s * (4 + 2) - 4 * a - 2 * d)


def test_qlora_needs_far_less_than_lora():
    lora = estimate(LLAMA2_7B, TrainConfig(method="lora", grad_ckpt=True)).allocated_peak_bytes
    qlora = estimate(LLAMA2_7B, TrainConfig(method="qlora", grad_ckpt=True)).allocated_peak_bytes
    assert qlora < 0.6 * lora


def test_rank_larger_than_layer_is_a_user_error():
    with pytest.raises(InputError, match="rank"):
        estimate(LLAMA2_7B, TrainConfig(method="lora", lora_r=5000))


def test_unknown_target_is_a_user_error():
    with pytest.raises(InputError, match="not a linear layer"):
        estimate(LLAMA2_7B, TrainConfig(method="lora", lora_targets=("c_attn",)))


def test_batch_zero_is_rejected():
    with pytest.raises(ValueError, match="micro-batch"):
        TrainConfig(micro_batch=0)


def test_tied_embeddings_counted_once():
    spec = from_name("meta-llama/Llama-3.2-1B")
    assert spec.tied_embeddings
    assert math.isclose(spec.params, 1_235_814_400)


def test_moe_with_fp32_experts_is_refused():
    from planner.rules import unsupported
    moe = from_name("Qwen/Qwen3-30B-A3B")
    assert unsupported(moe, TrainConfig(method="qlora")) and unsupported(moe, TrainConfig(precision="bf16-mixed"))
    assert unsupported(moe, TrainConfig(method="lora")) is None
    assert unsupported(LLAMA2_7B, TrainConfig(method="qlora")) is None


def test_adafactor_factors_matrices_by_their_shape():
    s = states(TrainConfig(method="full", optimizer="adafactor", precision="bf16-mixed"))
    spec = LLAMA2_7B
    per_layer = 4 * ((4096 + 4096) * 4 + (11008 + 4096) * 3 + 4096 * 2)  # rows + cols of each matrix, norms whole
    rest = 4 * ((32000 + 4096) * 2 + 4096)                             # embedding, lm_head, final norm
    assert s.optimizer_states == spec.n_layer * per_layer + rest
