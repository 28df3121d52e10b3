"""The measurement harness: fake-tensor runs equal real CPU runs, components add up, and the stand-ins
hold what bitsandbytes and peft really hold."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from measure import fake4bit
from measure.harness import build_model, contiguous_positions, hf_config, main, measure, tag_model
from measure.tracker import COMPONENTS, PHASES, StorageTracker
from planner.config import TrainConfig
from profiles.spec import ModelSpec
from profiles.models import from_name

TINY = dict(n_layer=2, hidden=256, intermediate=512, n_head=4, n_kv_head=2, head_dim=64, vocab=1000)


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return from_name("meta-llama/Llama-3.1-8B", **TINY)


def cfg(**changes) -> TrainConfig:
    return TrainConfig(**{"seq_len": 64, **changes})


def same_numbers(a, b) -> None:
    assert a.allocated_peak_bytes == b.allocated_peak_bytes
    assert a.step1_peak_bytes == b.step1_peak_bytes
    assert a.phase_peaks == b.phase_peaks
    assert a.components == b.components
    assert a.peak_phase == b.peak_phase


@pytest.mark.parametrize("changes", [dict(method="lora"), dict(method="full"), dict(method="qlora"),
                                     dict(method="lora", grad_ckpt=True, precision="bf16-mixed"),
                                     dict(method="full", optimizer="adamw8bit")])
def test_fake_run_equals_real_cpu_run(spec, changes):
    same_numbers(measure(spec, cfg(**changes), device="fake"), measure(spec, cfg(**changes), device="cpu"))


@pytest.mark.parametrize("changes", [dict(method="lora"), dict(method="full"), dict(method="qlora"),
                                     dict(method="qlora", grad_ckpt=True), dict(method="lora", attn="eager"),
                                     dict(method="full", optimizer="paged_adamw8bit"),
                                     dict(method="full", optimizer="adafactor"), dict(method="lora", optimizer="sgd"),
                                     dict(method="lora", precision="fp16-mixed", attn="flash")])
def test_components_sum_to_the_peak(spec, changes):
    m = measure(spec, cfg(**changes))
    assert set(m.components) == set(COMPONENTS)
    assert sum(m.components.values()) == m.allocated_peak_bytes == m.tracked_peak_bytes
    assert set(m.phase_peaks) == set(PHASES)
    assert m.allocated_peak_bytes == max(m.phase_peaks.values()) == m.phase_peaks[m.peak_phase]
    json.dumps(m.to_dict())


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_params_total_is_the_spec_count(method, tied):
    spec = from_name("meta-llama/Llama-3.1-8B", tied_embeddings=tied, **TINY)
    m = measure(spec, cfg(method=method), steps=1)
    assert m.params_total == spec.params
    if method == "full":   # tied embeddings are one tensor: 2 bytes per parameter plus the rotary buffers
        assert m.params_trainable == spec.params
        assert m.components["weights"] == 2 * spec.params + 2 * 4 * spec.head_dim // 2


def test_full_bf16_adamw_holds_2p_gradients_and_4p_states_at_the_step(spec):
    m = measure(spec, cfg(method="full"))
    p, tensors = spec.params, len(param_numels(spec))
    assert m.peak_phase == "optimizer_step"
    assert m.components["gradients"] == 2 * p
    assert m.components["optimizer_states"] == 4 * p + 4 * tensors   # exp_avg, exp_avg_sq, one fp32 step each
    assert m.components["temporary"] >= 2 * p                          # foreach AdamW's copy of the parameters
    assert m.step1_peak_bytes == m.allocated_peak_bytes                 # states appear inside step 1's step


def test_lora_trainable_count_and_dtype_are_peft_s(spec):
    config = cfg(method="lora", lora_targets=("q", "v"), lora_r=8)
    model, _ = build_model(spec, config, [])
    trainable, _ = model.get_nb_trainable_parameters()
    m = measure(spec, config, steps=1)
    assert m.params_trainable == trainable == spec.n_layer * 8 * ((256 + 256) + (256 + 128))
    assert m.adapter_dtype == "float32"   # peft's autocast_adapter_dtype keeps adapters fp32 on a bf16 model
    assert m.components["adapters"] == 4 * trainable


def test_fused_and_named_lora_targets(spec):
    config = cfg(method="lora", lora_targets=("q_proj", "mlp"))
    model, _ = build_model(spec, config, [])
    adapted = {name.split(".")[-2] for name, _ in model.named_modules() if name.endswith("lora_A")}
    assert adapted == {"q_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.mark.parametrize("in_out", [(256, 512), (4096, 11008), (100, 30)])
@pytest.mark.parametrize("double_quant", [False, True])
def test_standin_4bit_bytes_equal_bitsandbytes(in_out, double_quant):
    import bitsandbytes as bnb
    d_in, d_out = in_out
    numel = d_in * d_out
    real = bnb.nn.Linear4bit(d_in, d_out, bias=False, compute_dtype=torch.bfloat16,
                             compress_statistics=double_quant, quant_type="nf4")
    real.weight = bnb.nn.Params4bit(torch.randn(d_out, d_in, dtype=torch.bfloat16), requires_grad=False,
                                    compress_statistics=double_quant, quant_type="nf4")
    real = real.to("cpu")   # quantizes
    real_tensors = [real.weight, *quant_state_tensors(real)]
    stand_in = fake4bit.FakeLinear4bit(d_in, d_out, False, torch.bfloat16, torch.bfloat16, double_quant)
    assert stand_in.weight.shape == real.weight.shape and stand_in.weight.dtype == torch.uint8
    assert stand_in.weight.nbytes == numel // 2 + numel % 2
    if not double_quant:
        assert stand_in.weight.nbytes + stand_in.absmax.nbytes == numel // 2 + 4 * -(-numel // 64)
    assert tracked_bytes(stand_in.buffers()) == fake4bit.constant_bytes(numel, double_quant)
    assert tracked_bytes([stand_in.weight, *stand_in.buffers()]) == tracked_bytes(real_tensors)


def tracked_bytes(tensors) -> int:
    tracker = StorageTracker()
    tracker.tag(list(tensors), "weights")
    return tracker.live_bytes


@pytest.mark.parametrize("double_quant", [False, True])
def test_qlora_equals_a_real_bitsandbytes_model_on_cpu(spec, tmp_path, double_quant):
    """The same tiny model, loaded 4-bit by transformers + bitsandbytes and prepared by peft, holds the same
    bytes and peaks at the same numbers in every phase (once bitsandbytes' QuantState tensors are counted)."""
    real = real_qlora_model(spec, tmp_path, double_quant)
    config = cfg(method="qlora", double_quant=double_quant)
    fake = measure(spec, config, device="fake")
    tracker = StorageTracker()
    with contiguous_positions(), tracker:
        tag_model(real, tracker)
        tracker.tag(quant_state_tensors(real), "quant_constants")
        static = {c: b for c, b in tracker.components(tracker.seq).items() if b}
        phase_peaks = run_steps(real, tracker, config, spec.vocab)
    assert static == {c: fake.components[c] for c in ("weights", "quant_constants", "adapters")}
    assert phase_peaks == fake.phase_peaks


def real_qlora_model(spec, path, double_quant):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from transformers.utils import logging
    logging.disable_progress_bar()
    AutoModelForCausalLM.from_config(hf_config(spec), dtype=torch.bfloat16).save_pretrained(path)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                               bnb_4bit_use_double_quant=double_quant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, quantization_config=quant)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets,
                                                 task_type="CAUSAL_LM"))
    # Training mode, as Trainer and the harness set it: from_pretrained returns eval mode, where bitsandbytes
    # repacks 4-bit weights for CPU inference on CPUs with AVX512-BF16 (a different layout and size)
    return model.train()


def quant_state_tensors(model):
    for module in model.modules():
        qs = getattr(getattr(module, "weight", None), "quant_state", None)
        if qs is not None:
            yield from (qs.absmax, qs.code)
            if qs.nested:
                yield from (qs.offset, qs.state2.absmax, qs.state2.code)


def run_steps(model, tracker, config, vocab) -> dict[str, int]:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], foreach=True)
    for _ in range(2):
        tracker.reset_peak()
        ids = torch.randint(0, vocab, (config.micro_batch, config.seq_len))
        tracker.phase = "forward"
        loss = model(input_ids=ids, labels=ids).loss
        tracker.phase = "backward"
        loss.backward()
        del loss
        tracker.phase = "optimizer_step"
        opt.step()
        opt.zero_grad(set_to_none=True)
    return dict(tracker.phase_peaks)


def test_checkpointing_lowers_activations(spec):
    deep = from_name("meta-llama/Llama-3.1-8B", **{**TINY, "n_layer": 4})
    plain = measure(deep, cfg(method="lora", seq_len=256), steps=1)
    ckpt = measure(deep, cfg(method="lora", seq_len=256, grad_ckpt=True), steps=1)
    assert ckpt.components["activations"] < plain.components["activations"]
    assert ckpt.phase_peaks["forward"] < plain.phase_peaks["forward"]


def test_optimizer_state_rules(spec):
    p = spec.params
    sgd = measure(spec, cfg(method="full", optimizer="sgd"))
    assert sgd.components["optimizer_states"] == 2 * p   # one bf16 momentum buffer
    eight = measure(spec, cfg(method="full", optimizer="adamw8bit"))
    assert eight.components["optimizer_states"] == adamw8bit_state_bytes(spec)
    assert eight.paged_bytes == 0
    paged = measure(spec, cfg(method="full", optimizer="paged_adamw"))
    assert paged.components["optimizer_states"] == 8 * p   # bitsandbytes' 32-bit states are fp32 for bf16 params
    big = sum(n for n in param_numels(spec) if n >= 1e5)
    assert paged.paged_bytes == 8 * big


def param_numels(spec):
    model, _ = build_model(spec, cfg(method="full"), [])
    return [q.numel() for q in model.parameters()]


def adamw8bit_state_bytes(spec) -> int:
    """What bitsandbytes' Optimizer2State.init_state allocates with optim_bits=8 (read from its source)."""
    total = 2 * 256 * 4   # the signed and unsigned dynamic maps, moved to the device once
    for n in param_numels(spec):
        total += 8 * n if n < 4096 else 2 * n + 2 * 4 * -(-n // 256)
    return total


def test_7b_lora_step_on_fake_tensors_through_the_command_line(capsys):
    main(["meta-llama/Llama-2-7b-hf", "--method", "lora", "--lora-targets", "q,v", "--seq-len", "2048", "--json"])
    m = json.loads(capsys.readouterr().out)
    spec = from_name("meta-llama/Llama-2-7b-hf")
    assert m["params_total"] == spec.params == 6738415616
    assert m["params_trainable"] == 32 * 16 * (2 * 4096 + 2 * 4096) == 8388608
    assert m["components"]["weights"] == 2 * spec.params + 2 * 4 * 64   # bf16 weights and rotary inv_freq
    assert sum(m["components"].values()) == m["allocated_peak_bytes"]
    assert 20 * 2**30 < m["allocated_peak_bytes"] < 30 * 2**30
    assert m["device"] == "fake"
