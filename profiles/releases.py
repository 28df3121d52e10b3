"""When each catalog model was released and under what terms: the release year, whether the Hub repository is
gated (access asked for and granted before download) and the licence, as `fitplan models` shows them.

Read from the Hub model cards and repositories (the model card's release date or first commit, the
repository's licence tag and gate). `confidence` is "high" unless noted; low ones are the entries to re-check.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    year: int
    gated: bool        # the Hub asks for an access request (a licence or contact form) before download
    licence: str       # the Hub's licence tag (apache-2.0, mit, llama3.1, gemma, ...)
    confidence: str = "high"


def _r(year: int, gated: bool, licence: str, confidence: str = "high") -> Release:
    return Release(year, gated, licence, confidence)


RELEASES: dict[str, Release] = {
    # llama-2
    "meta-llama/Llama-2-7b-hf": _r(2023, True, "llama2"),
    "meta-llama/Llama-2-7b-chat-hf": _r(2023, True, "llama2"),
    "meta-llama/Llama-2-13b-hf": _r(2023, True, "llama2"),
    "meta-llama/Llama-2-13b-chat-hf": _r(2023, True, "llama2"),
    "meta-llama/Llama-2-70b-hf": _r(2023, True, "llama2"),
    "meta-llama/Llama-2-70b-chat-hf": _r(2023, True, "llama2"),
    # llama-3
    "meta-llama/Meta-Llama-3-8B": _r(2024, True, "llama3"),
    "meta-llama/Meta-Llama-3-8B-Instruct": _r(2024, True, "llama3"),
    "meta-llama/Meta-Llama-3-70B": _r(2024, True, "llama3"),
    "meta-llama/Meta-Llama-3-70B-Instruct": _r(2024, True, "llama3"),
    "meta-llama/Llama-3.1-8B": _r(2024, True, "llama3.1"),
    "meta-llama/Llama-3.1-8B-Instruct": _r(2024, True, "llama3.1"),
    "meta-llama/Llama-3.1-70B": _r(2024, True, "llama3.1"),
    "meta-llama/Llama-3.1-70B-Instruct": _r(2024, True, "llama3.1"),
    "meta-llama/Llama-3.3-70B-Instruct": _r(2024, True, "llama3.3"),  # released Dec 2024
    "meta-llama/Llama-3.1-405B": _r(2024, True, "llama3.1"),
    "meta-llama/Llama-3.1-405B-Instruct": _r(2024, True, "llama3.1"),
    "meta-llama/Llama-3.2-1B": _r(2024, True, "llama3.2"),
    "meta-llama/Llama-3.2-1B-Instruct": _r(2024, True, "llama3.2"),
    "meta-llama/Llama-3.2-3B": _r(2024, True, "llama3.2"),
    "meta-llama/Llama-3.2-3B-Instruct": _r(2024, True, "llama3.2"),
    # llama-4
    "meta-llama/Llama-4-Scout-17B-16E": _r(2025, True, "llama4"),
    # tinyllama
    # Dec 2023 (3T checkpoint and Chat v1.0)
    "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T": _r(2023, False, "apache-2.0"),
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": _r(2023, False, "apache-2.0"),  # Dec 2023 (3T checkpoint and Chat v1.0)
    # smollm2
    "HuggingFaceTB/SmolLM2-135M": _r(2024, False, "apache-2.0"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": _r(2024, False, "apache-2.0"),
    "HuggingFaceTB/SmolLM2-360M": _r(2024, False, "apache-2.0"),
    "HuggingFaceTB/SmolLM2-360M-Instruct": _r(2024, False, "apache-2.0"),
    "HuggingFaceTB/SmolLM2-1.7B": _r(2024, False, "apache-2.0"),
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": _r(2024, False, "apache-2.0"),
    # smollm3
    "HuggingFaceTB/SmolLM3-3B": _r(2025, False, "apache-2.0"),
    # yi
    # Nov 2023; originally 'yi-license' (Yi Series Models Community License), Hub tag now apache-2.0
    "01-ai/Yi-6B": _r(2023, False, "apache-2.0", "medium"),
    # Nov 2023; originally 'yi-license' (Yi Series Models Community License), Hub tag now apache-2.0
    "01-ai/Yi-6B-Chat": _r(2023, False, "apache-2.0", "medium"),
    # licence switched from the Yi community licence to Apache-2.0 in 2024
    "01-ai/Yi-9B": _r(2024, False, "apache-2.0", "medium"),
    # Nov 2023; originally 'yi-license' (Yi Series Models Community License), Hub tag now apache-2.0
    "01-ai/Yi-34B": _r(2023, False, "apache-2.0", "medium"),
    # Nov 2023; originally 'yi-license' (Yi Series Models Community License), Hub tag now apache-2.0
    "01-ai/Yi-34B-Chat": _r(2023, False, "apache-2.0", "medium"),
    # mistral
    # Sep/Dec 2023; contact-info gate added Apr 2024 (auto-approved)
    "mistralai/Mistral-7B-v0.1": _r(2023, True, "apache-2.0", "medium"),
    # Sep/Dec 2023; contact-info gate added Apr 2024 (auto-approved)
    "mistralai/Mistral-7B-Instruct-v0.1": _r(2023, True, "apache-2.0", "medium"),
    # Sep/Dec 2023; contact-info gate added Apr 2024 (auto-approved)
    "mistralai/Mistral-7B-Instruct-v0.2": _r(2023, True, "apache-2.0", "medium"),
    "mistralai/Mistral-7B-v0.3": _r(2024, True, "apache-2.0", "medium"),  # May 2024; contact-info gate (auto-approved)
    # May 2024; contact-info gate (auto-approved)
    "mistralai/Mistral-7B-Instruct-v0.3": _r(2024, True, "apache-2.0", "medium"),
    # gated = share-contact-info form (auto-approved); apache-2.0 weights
    "mistralai/Mistral-Nemo-Base-2407": _r(2024, True, "apache-2.0", "medium"),
    # gated = share-contact-info form (auto-approved); apache-2.0 weights
    "mistralai/Mistral-Nemo-Instruct-2407": _r(2024, True, "apache-2.0", "medium"),
    # mistral-small
    # gating of 2025 Mistral repos not verified; older Mistral repos got a contact-info gate in Apr 2024
    "mistralai/Mistral-Small-24B-Base-2501": _r(2025, False, "apache-2.0", "low"),
    # gating of 2025 Mistral repos not verified; older Mistral repos got a contact-info gate in Apr 2024
    "mistralai/Magistral-Small-2506": _r(2025, False, "apache-2.0", "low"),
    # gating of 2025 Mistral repos not verified; older Mistral repos got a contact-info gate in Apr 2024
    "mistralai/Devstral-Small-2505": _r(2025, False, "apache-2.0", "low"),
    # ministral
    # mrl (Mistral Research License); gate = accept MRL; commercial use needs a Mistral licence
    "mistralai/Ministral-8B-Instruct-2410": _r(2024, True, "mrl"),
    # mixtral
    # Dec 2023; contact-info gate added Apr 2024 (auto-approved)
    "mistralai/Mixtral-8x7B-v0.1": _r(2023, True, "apache-2.0", "medium"),
    # Dec 2023; contact-info gate added Apr 2024 (auto-approved)
    "mistralai/Mixtral-8x7B-Instruct-v0.1": _r(2023, True, "apache-2.0", "medium"),
    # qwen2.5
    "Qwen/Qwen2.5-0.5B": _r(2024, False, "apache-2.0"),
    "Qwen/Qwen2.5-0.5B-Instruct": _r(2024, False, "apache-2.0"),
    "Qwen/Qwen2.5-1.5B": _r(2024, False, "apache-2.0"),
    "Qwen/Qwen2.5-1.5B-Instruct": _r(2024, False, "apache-2.0"),
    "Qwen/Qwen2.5-3B": _r(2024, False, "qwen-research"),  # Qwen RESEARCH LICENSE (non-commercial)
    "Qwen/Qwen2.5-3B-Instruct": _r(2024, False, "qwen-research"),  # Qwen RESEARCH LICENSE (non-commercial)
    "Qwen/Qwen2.5-7B": _r(2024, False, "apache-2.0"),
    "Qwen/Qwen2.5-7B-Instruct": _r(2024, False, "apache-2.0"),
    "Qwen/Qwen2.5-14B": _r(2024, False, "apache-2.0"),
    "Qwen/Qwen2.5-14B-Instruct": _r(2024, False, "apache-2.0"),
    "Qwen/Qwen2.5-32B": _r(2024, False, "apache-2.0"),
    "Qwen/Qwen2.5-32B-Instruct": _r(2024, False, "apache-2.0"),
    "Qwen/Qwen2.5-72B": _r(2024, False, "qwen"),  # Qwen LICENSE AGREEMENT (tongyi-qianwen successor; >100M MAU clause)
    # Qwen LICENSE AGREEMENT (tongyi-qianwen successor; >100M MAU clause)
    "Qwen/Qwen2.5-72B-Instruct": _r(2024, False, "qwen"),
    # qwen3
    "Qwen/Qwen3-0.6B": _r(2025, False, "apache-2.0"),  # Apr 2025
    "Qwen/Qwen3-1.7B": _r(2025, False, "apache-2.0"),  # Apr 2025
    "Qwen/Qwen3-4B": _r(2025, False, "apache-2.0"),  # Apr 2025
    "Qwen/Qwen3-8B": _r(2025, False, "apache-2.0"),  # Apr 2025
    "Qwen/Qwen3-14B": _r(2025, False, "apache-2.0"),  # Apr 2025
    "Qwen/Qwen3-32B": _r(2025, False, "apache-2.0"),  # Apr 2025
    # qwen3-moe
    "Qwen/Qwen3-30B-A3B": _r(2025, False, "apache-2.0"),  # Apr 2025
    "Qwen/Qwen3-235B-A22B": _r(2025, False, "apache-2.0"),  # Apr 2025
    # qwen3-next
    "Qwen/Qwen3-Next-80B-A3B-Instruct": _r(2025, False, "apache-2.0"),  # Sep 2025
    # gemma
    "google/gemma-2b": _r(2024, True, "gemma"),  # Feb 2024
    "google/gemma-2b-it": _r(2024, True, "gemma"),  # Feb 2024
    "google/gemma-7b": _r(2024, True, "gemma"),  # Feb 2024
    "google/gemma-7b-it": _r(2024, True, "gemma"),  # Feb 2024
    # gemma-2
    "google/gemma-2-2b": _r(2024, True, "gemma"),
    "google/gemma-2-2b-it": _r(2024, True, "gemma"),
    "google/gemma-2-9b": _r(2024, True, "gemma"),
    "google/gemma-2-9b-it": _r(2024, True, "gemma"),
    "google/gemma-2-27b": _r(2024, True, "gemma"),
    "google/gemma-2-27b-it": _r(2024, True, "gemma"),
    # gemma-3
    "google/gemma-3-270m": _r(2025, True, "gemma"),
    "google/gemma-3-1b-pt": _r(2025, True, "gemma"),
    "google/gemma-3-1b-it": _r(2025, True, "gemma"),
    "google/gemma-3-4b-pt": _r(2025, True, "gemma"),
    "google/gemma-3-4b-it": _r(2025, True, "gemma"),
    "google/gemma-3-12b-pt": _r(2025, True, "gemma"),
    "google/gemma-3-12b-it": _r(2025, True, "gemma"),
    "google/gemma-3-27b-pt": _r(2025, True, "gemma"),
    "google/gemma-3-27b-it": _r(2025, True, "gemma"),
    # phi
    # Sep 2023; originally Microsoft Research License, relicensed MIT Jan 2024
    "microsoft/phi-1_5": _r(2023, False, "mit"),
    "microsoft/phi-2": _r(2023, False, "mit"),  # Dec 2023; relicensed MIT Jan 2024
    # phi-3
    "microsoft/Phi-3-mini-4k-instruct": _r(2024, False, "mit"),
    "microsoft/Phi-3-medium-4k-instruct": _r(2024, False, "mit"),
    "microsoft/phi-4": _r(2025, False, "mit", "medium"),  # announced Dec 2024 (Azure), weights on the Hub Jan 2025
    "microsoft/Phi-4-mini-instruct": _r(2025, False, "mit"),  # Feb 2025
    # falcon
    # first under the TII Falcon licence, Apache-2.0 since late May 2023
    "tiiuae/falcon-7b": _r(2023, False, "apache-2.0"),
    # first under the TII Falcon licence, Apache-2.0 since late May 2023
    "tiiuae/falcon-7b-instruct": _r(2023, False, "apache-2.0"),
    # pythia
    # uploaded ~Feb 2023 (some repos may date from late 2022)
    "EleutherAI/pythia-160m": _r(2023, False, "apache-2.0", "medium"),
    # uploaded ~Feb 2023 (some repos may date from late 2022)
    "EleutherAI/pythia-410m": _r(2023, False, "apache-2.0", "medium"),
    # uploaded ~Feb 2023 (some repos may date from late 2022)
    "EleutherAI/pythia-1b": _r(2023, False, "apache-2.0", "medium"),
    # uploaded ~Feb 2023 (some repos may date from late 2022)
    "EleutherAI/pythia-1.4b": _r(2023, False, "apache-2.0", "medium"),
    # uploaded ~Feb 2023 (some repos may date from late 2022)
    "EleutherAI/pythia-2.8b": _r(2023, False, "apache-2.0", "medium"),
    # uploaded ~Feb 2023 (some repos may date from late 2022)
    "EleutherAI/pythia-6.9b": _r(2023, False, "apache-2.0", "medium"),
    # uploaded ~Feb 2023 (some repos may date from late 2022)
    "EleutherAI/pythia-12b": _r(2023, False, "apache-2.0", "medium"),
    # stablelm
    "stabilityai/stablelm-base-alpha-3b": _r(2023, False, "cc-by-sa-4.0"),  # Apr 2023
    "stabilityai/stablelm-3b-4e1t": _r(2023, False, "cc-by-sa-4.0"),  # Sep/Oct 2023
    # other (stabilityai community / non-commercial research licence); Jan 2024; licence changed to Stability AI Community License mid-2024; gating not verified
    "stabilityai/stablelm-2-1_6b": _r(2024, False, "stabilityai-community", "low"),
    # gpt-2
    # first uploaded as 'gpt2' etc.; moved under openai-community in 2024
    "openai-community/gpt2": _r(2019, False, "mit"),
    # first uploaded as 'gpt2' etc.; moved under openai-community in 2024
    "openai-community/gpt2-medium": _r(2019, False, "mit"),
    # first uploaded as 'gpt2' etc.; moved under openai-community in 2024
    "openai-community/gpt2-large": _r(2019, False, "mit"),
    # first uploaded as 'gpt2' etc.; moved under openai-community in 2024
    "openai-community/gpt2-xl": _r(2019, False, "mit"),
    # olmo-2
    "allenai/OLMo-2-0425-1B": _r(2025, False, "apache-2.0"),
    "allenai/OLMo-2-1124-7B": _r(2024, False, "apache-2.0"),  # Nov 2024
    "allenai/OLMo-2-1124-7B-Instruct": _r(2024, False, "apache-2.0"),  # Nov 2024
    "allenai/OLMo-2-1124-13B": _r(2024, False, "apache-2.0"),  # Nov 2024
    "allenai/OLMo-2-1124-13B-Instruct": _r(2024, False, "apache-2.0"),  # Nov 2024
    "allenai/OLMo-2-0325-32B": _r(2025, False, "apache-2.0"),
    # olmo-3
    "allenai/Olmo-3-1025-7B": _r(2025, False, "apache-2.0"),  # Nov 2025
    "allenai/Olmo-3-7B-Instruct-SFT": _r(2025, False, "apache-2.0"),  # Nov 2025
    # gpt-oss
    "openai/gpt-oss-20b": _r(2025, False, "apache-2.0"),  # Aug 2025 (plus usage policy)
    "openai/gpt-oss-120b": _r(2025, False, "apache-2.0"),  # Aug 2025 (plus usage policy)
    # seed-oss
    "ByteDance-Seed/Seed-OSS-36B-Instruct": _r(2025, False, "apache-2.0"),  # Aug 2025
    # deepseek-v3
    # other: deepseek (DeepSeek Model License; code MIT); Dec 2024; V3-0324 later released under MIT
    "deepseek-ai/DeepSeek-V3": _r(2024, False, "deepseek", "medium"),
    # deepseek-r1-distill
    # Jan 2025; base-model licences (Qwen2.5 apache-2.0 / Llama 3.1-3.3) also apply
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": _r(2025, False, "mit"),
    # Jan 2025; base-model licences (Qwen2.5 apache-2.0 / Llama 3.1-3.3) also apply
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": _r(2025, False, "mit"),
    # Jan 2025; base-model licences (Qwen2.5 apache-2.0 / Llama 3.1-3.3) also apply
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": _r(2025, False, "mit"),
    # Jan 2025; base-model licences (Qwen2.5 apache-2.0 / Llama 3.1-3.3) also apply
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": _r(2025, False, "mit"),
    # Jan 2025; base-model licences (Qwen2.5 apache-2.0 / Llama 3.1-3.3) also apply
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": _r(2025, False, "mit"),
    # Jan 2025; base-model licences (Qwen2.5 apache-2.0 / Llama 3.1-3.3) also apply
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B": _r(2025, False, "mit"),
}


def release_of(name: str) -> Release | None:
    """The release record of a catalog name (a Hugging Face id), or None for models outside the catalog."""
    return RELEASES.get(name)
