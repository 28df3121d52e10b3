"""Counts the aten ops eager transformers (+ peft) dispatches per Llama layer, forward and backward: the host-side
work `planner.layer_costs` charges per micro-batch (OPS_* constants). Runs a tiny Llama on the CPU under a
TorchDispatchMode; per-layer counts are the difference between a 3-layer and a 1-layer model.

    python -m benchmarks.dispatch
"""
from __future__ import annotations

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(layers: int, lora: bool):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=layers, vocab_size=256, attn_implementation="sdpa")
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    if lora:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0))
    return model


def count(model, checkpointing: bool) -> tuple[int, int]:
    """(forward ops, backward ops) of one training step, after a warm-up step."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 1
            return func(*args, **(kwargs or {}))

    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    ids = torch.randint(0, 256, (1, 32))
    model(input_ids=ids, labels=ids).loss.backward()
    forward, backward = Counter(), Counter()
    with forward:
        loss = model(input_ids=ids, labels=ids).loss
    with backward:
        loss.backward()
    return forward.ops, backward.ops


def per_layer(lora: bool, checkpointing: bool) -> tuple[float, float, float, float]:
    """(forward per layer, backward per layer, forward outside, backward outside)."""
    one, three = count(build(1, lora), checkpointing), count(build(3, lora), checkpointing)
    fwd, bwd = (three[0] - one[0]) / 2, (three[1] - one[1]) / 2
    return fwd, bwd, one[0] - fwd, one[1] - bwd


def main() -> None:
    for lora in (False, True):
        for ckpt in (False, True):
            fwd, bwd, out_f, out_b = per_layer(lora, ckpt)
            print(f"lora={lora!s:5} checkpointing={ckpt!s:5} per layer: forward {fwd:.0f}, backward {bwd:.0f} ops; "
                  f"outside the layers: {out_f:.0f} + {out_b:.0f}")


if __name__ == "__main__":
    main()
