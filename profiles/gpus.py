"""The GPU catalog: memory, tensor throughput, bandwidth and a typical rental price of the NVIDIA
cards fitplan can plan for without having them.

One frozen dataclass, `GpuSpec`, and one entry per card with the vendor page its numbers come from.
Conventions, so entries compare:
- `memory_bytes` is what NVML reports as the card's total. Where that value is known (`memory_exact`)
  it is used; otherwise the marketing size in GiB * 2**30. Datacenter GDDR cards run with ECC on,
  which keeps 1/16 of the memory (an L4 reports 23034 MiB, not 24576).
- `bf16_tflops` / `fp16_tflops` are dense (no 2:4 sparsity) tensor-core TFLOP/s with FP32
  accumulation, what a training matmul uses. GeForce cards run FP32 accumulation at half the rate of
  FP16 accumulation, so their numbers are half of the headline ones. Cards without bf16 have
  `bf16_tflops = 0`.
- `price_usd_per_hour` is rough, mid-2025, per GPU: `price_basis` says whether it is a typical
  on-demand price of GPU clouds (Lambda, RunPod secure cloud, AWS, GCP) or a community-cloud
  (RunPod community, vast.ai) rate for consumer and workstation cards.
Imports nothing heavy.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, replace

from common.errors import InputError, opt
from common.units import GiB, MiB


ON_DEMAND = "on-demand cloud"
COMMUNITY = "community cloud"


@dataclass(frozen=True)
class GpuSpec:
    """One NVIDIA card as fitplan plans for it."""

    name: str                         # how fitplan prints it
    key: str                          # the short, stable spelling for --gpu and JSON
    memory_bytes: int                 # total as NVML reports it (see memory_exact)
    bf16: bool
    compute_capability: tuple[int, int]
    bf16_tflops: float                # dense tensor TFLOP/s, FP32 accumulate; 0 without bf16
    fp16_tflops: float                # dense tensor TFLOP/s, FP32 accumulate
    mem_bandwidth_gbs: float          # GB/s (10**9 bytes)
    price_usd_per_hour: float
    price_basis: str                  # ON_DEMAND or COMMUNITY
    source: str                       # vendor datasheet or product page
    aliases: tuple[str, ...] = ()     # other spellings, NVML's full names first
    memory_exact: bool = False        # memory_bytes is the known NVML total, not the marketing size
    nvlink: bool = False              # a multi-GPU server of this card links the GPUs by NVLink (SXM, NVL)
    # What the speed model needs beyond the headline rates (filled from UNITS_AND_LINKS below):
    sms: int = 0                      # streaming multiprocessors (GEMM wave quantization)
    fp32_tflops: float = 0.0          # non-tensor FP32 TFLOP/s (fp32 matmuls: PyTorch leaves TF32 off)
    pcie_gen: int = 4                 # host link generation, x16 (offload, and GPU-to-GPU without NVLink)
    nvlink_gbs: float = 0.0           # NVLink bandwidth per GPU, one direction, GB/s; 0 without NVLink
    nvlink_group: int = 0             # GPUs one NVLink domain joins (8 on an NVSwitch board, 2 or 4 on bridges)
    pcie_p2p: bool = True             # peer-to-peer over PCIe (GeForce drivers disable it: traffic goes via host)

    def __post_init__(self) -> None:
        if not self.source or self.memory_bytes <= 0 or self.fp16_tflops <= 0 or self.mem_bandwidth_gbs <= 0:
            raise ValueError(f"GPU catalog entry {self.name!r} is incomplete")
        if self.bf16 != (self.bf16_tflops > 0):
            raise ValueError(f"GPU catalog entry {self.name!r}: bf16 and bf16_tflops disagree")
        object.__setattr__(self, "aliases", tuple(self.aliases))

    @property
    def tflops(self) -> float:
        """The throughput a 16-bit training run gets: bf16 where supported, else fp16."""
        return self.bf16_tflops if self.bf16 else self.fp16_tflops

    def to_dict(self) -> dict:
        out = asdict(self)
        out["compute_capability"] = list(self.compute_capability)
        out["aliases"] = list(self.aliases)
        return out


def _gpu(name: str, key: str, memory_gib: int, cc: tuple[int, int], tflops16: float, bandwidth: float,
         price: float, basis: str, source: str, aliases: tuple[str, ...] = (), nvml_mib: int | None = None,
         assumed: bool = False, nvlink: bool = False) -> GpuSpec:
    """A catalog entry. `nvml_mib`: the NVML total in MiB, known, or `assumed` from a sibling card;
    without it the marketing size `memory_gib` is used. bf16 comes with compute capability 8.0."""
    has_bf16 = cc >= (8, 0)
    memory = nvml_mib * MiB if nvml_mib else memory_gib * GiB
    return GpuSpec(name=name, key=key, memory_bytes=memory, bf16=has_bf16, compute_capability=cc,
                   bf16_tflops=float(tflops16) if has_bf16 else 0.0, fp16_tflops=float(tflops16),
                   mem_bandwidth_gbs=float(bandwidth), price_usd_per_hour=price, price_basis=basis,
                   source=source, aliases=aliases, memory_exact=nvml_mib is not None and not assumed,
                   nvlink=nvlink)


GA102_WHITEPAPER = ("https://www.nvidia.com/content/PDF/"
                    "nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf")
ADA_WHITEPAPER = "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf"
TURING_WHITEPAPER = ("https://images.nvidia.com/aem-dam/en-zz/Solutions/design-visualization/technologies/"
                     "turing-architecture/NVIDIA-Turing-Architecture-Whitepaper.pdf")
GEFORCE = "https://www.nvidia.com/en-us/geforce/graphics-cards/{}/"
DATACENTER = "https://www.nvidia.com/en-us/data-center/{}/"

CATALOG: list[GpuSpec] = [
    # --- GeForce (consumer). TFLOP/s: FP32-accumulate rate, half the FP16-accumulate headline. ---
    # Turing: no bf16; 544 tensor cores at the 1545 MHz reference boost (whitepaper's FE is 56.9)
    _gpu("RTX 2080 Ti", "rtx-2080-ti", 11, (7, 5), 53.8, 616, 0.10, COMMUNITY, TURING_WHITEPAPER,
         ("NVIDIA GeForce RTX 2080 Ti",)),
    # GA106, 112 tensor cores at 1777 MHz: 50.9 TFLOP/s FP16-accumulate, 25.5 FP32-accumulate
    _gpu("RTX 3060 12GB", "rtx-3060", 12, (8, 6), 25.5, 360, 0.06, COMMUNITY,
         GEFORCE.format("30-series/rtx-3060-3060ti"), ("NVIDIA GeForce RTX 3060", "RTX 3060")),
    # GA102 whitepaper, Appendix A: 59.5 / 119 TFLOP/s
    _gpu("RTX 3080", "rtx-3080", 10, (8, 6), 59.5, 760, 0.12, COMMUNITY, GA102_WHITEPAPER,
         ("NVIDIA GeForce RTX 3080", "RTX 3080 10GB")),
    # GA102 whitepaper: 71 / 142 TFLOP/s; NVML reports 24576 MiB
    _gpu("RTX 3090", "rtx-3090", 24, (8, 6), 71.0, 936, 0.22, COMMUNITY, GA102_WHITEPAPER,
         ("NVIDIA GeForce RTX 3090",), nvml_mib=24576),
    # 84 SMs at 1860 MHz: 160 TFLOP/s FP16-accumulate, 80 FP32-accumulate
    _gpu("RTX 3090 Ti", "rtx-3090-ti", 24, (8, 6), 80.0, 1008, 0.25, COMMUNITY,
         GEFORCE.format("30-series/rtx-3090-3090ti"), ("NVIDIA GeForce RTX 3090 Ti",)),
    # AD106: 353 AI TOPS (FP8, sparse) -> 44.1 TFLOP/s bf16 dense FP32-accumulate
    _gpu("RTX 4060 Ti 16GB", "rtx-4060-ti-16gb", 16, (8, 9), 44.1, 288, 0.10, COMMUNITY,
         GEFORCE.format("40-series/rtx-4060-4060ti"), ("NVIDIA GeForce RTX 4060 Ti", "RTX 4060 Ti")),
    # Ada whitepaper, Appendix: 97.5 / 194.9 TFLOP/s
    _gpu("RTX 4080", "rtx-4080", 16, (8, 9), 97.5, 716.8, 0.28, COMMUNITY, ADA_WHITEPAPER,
         ("NVIDIA GeForce RTX 4080",)),
    # 836 AI TOPS (FP8, sparse) -> 104.5 TFLOP/s
    _gpu("RTX 4080 SUPER", "rtx-4080-super", 16, (8, 9), 104.5, 736, 0.30, COMMUNITY,
         GEFORCE.format("40-series/rtx-4080-family"), ("NVIDIA GeForce RTX 4080 SUPER",)),
    # Ada whitepaper: 165.2 / 330.4 TFLOP/s; NVML reports 24564 MiB = 25757220864 bytes
    _gpu("RTX 4090", "rtx-4090", 24, (8, 9), 165.2, 1008, 0.34, COMMUNITY, ADA_WHITEPAPER,
         ("NVIDIA GeForce RTX 4090",), nvml_mib=24564),
    # GB203: 1801 AI TOPS (FP4, sparse) -> 225 TFLOP/s FP16-accumulate dense, 112.6 FP32-accumulate
    _gpu("RTX 5080", "rtx-5080", 16, (12, 0), 112.6, 960, 0.35, COMMUNITY,
         GEFORCE.format("50-series/rtx-5080"), ("NVIDIA GeForce RTX 5080",)),
    # GB202: 3352 AI TOPS (FP4, sparse) -> 419 TFLOP/s FP16-accumulate dense, 209.5 FP32-accumulate
    _gpu("RTX 5090", "rtx-5090", 32, (12, 0), 209.5, 1792, 0.69, COMMUNITY,
         GEFORCE.format("50-series/rtx-5090"), ("NVIDIA GeForce RTX 5090",)),

    # --- Workstation (full-rate FP32 accumulation; ECC off by default). ---
    # datasheet: 153.4 tensor TFLOP/s with sparsity
    _gpu("RTX A4000", "rtx-a4000", 16, (8, 6), 76.7, 448, 0.17, COMMUNITY,
         "https://www.nvidia.com/en-us/design-visualization/rtx-a4000/", ("NVIDIA RTX A4000",)),
    # datasheet: 222.2 tensor TFLOP/s with sparsity
    _gpu("RTX A5000", "rtx-a5000", 24, (8, 6), 111.1, 768, 0.22, COMMUNITY,
         "https://www.nvidia.com/en-us/design-visualization/rtx-a5000/", ("NVIDIA RTX A5000",)),
    # datasheet: 309.7 tensor TFLOP/s with sparsity
    _gpu("RTX A6000", "rtx-a6000", 48, (8, 6), 154.8, 768, 0.49, COMMUNITY,
         "https://www.nvidia.com/en-us/design-visualization/rtx-a6000/", ("NVIDIA RTX A6000",)),
    # datasheet: 1457 FP8 TFLOP/s with sparsity -> 364.2 bf16 dense
    _gpu("RTX 6000 Ada", "rtx-6000-ada", 48, (8, 9), 364.2, 960, 0.77, COMMUNITY,
         "https://www.nvidia.com/en-us/design-visualization/rtx-6000/",
         ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada Generation")),

    # --- Datacenter PCIe, GDDR with ECC on: NVML total is 15/16 of the marketing size. ---
    # datasheet: 149.7 | 299.4 bf16; 46068 MiB assumed like the L40S (ECC on)
    _gpu("A40", "a40", 48, (8, 6), 149.7, 696, 0.40, COMMUNITY, DATACENTER.format("a40"),
         ("NVIDIA A40",), nvml_mib=46068, assumed=True),
    # datasheet: 65 TFLOP/s mixed precision (FP16/FP32), no bf16; NVML reports 15360 MiB
    _gpu("T4", "t4", 16, (7, 5), 65.0, 320, 0.35, ON_DEMAND, DATACENTER.format("tesla-t4"),
         ("Tesla T4", "NVIDIA T4"), nvml_mib=15360),
    # datasheet: 125 | 250 bf16; 23028 MiB assumed like the A10G (ECC on)
    _gpu("A10", "a10", 24, (8, 6), 125.0, 600, 0.75, ON_DEMAND,
         DATACENTER.format("products/a10-gpu"), ("NVIDIA A10",), nvml_mib=23028, assumed=True),
    # AWS-only GA102 variant; NVIDIA publishes no datasheet. ~70 TFLOP/s dense as commonly quoted
    # (https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/); NVML reports 23028 MiB.
    # Price: g5.xlarge on-demand, us-east-1 (includes 4 vCPUs).
    _gpu("A10G", "a10g", 24, (8, 6), 70.0, 600, 1.006, ON_DEMAND,
         "https://aws.amazon.com/ec2/instance-types/g5/", ("NVIDIA A10G",), nvml_mib=23028),
    # datasheet: 242 bf16 TFLOP/s with sparsity; NVML reports 23034 MiB
    _gpu("L4", "l4", 24, (8, 9), 121.0, 300, 0.71, ON_DEMAND, DATACENTER.format("l4"),
         ("NVIDIA L4",), nvml_mib=23034),
    # datasheet: 181.05 | 362.1 bf16; 46068 MiB assumed like the L40S (ECC on)
    _gpu("L40", "l40", 48, (8, 9), 181.05, 864, 0.89, ON_DEMAND, DATACENTER.format("l40"),
         ("NVIDIA L40",), nvml_mib=46068, assumed=True),
    # datasheet: 362.05 | 733 bf16; NVML reports 46068 MiB
    _gpu("L40S", "l40s", 48, (8, 9), 362.05, 864, 0.99, ON_DEMAND, DATACENTER.format("l40s"),
         ("NVIDIA L40S",), nvml_mib=46068),

    # --- Datacenter HBM. ---
    # datasheet (SXM2): 125 tensor TFLOP/s, no bf16; NVML reports 16160 MiB (V100-SXM2-16GB)
    _gpu("V100 16GB", "v100-16gb", 16, (7, 0), 125.0, 900, 0.50, ON_DEMAND, DATACENTER.format("v100"),
         ("Tesla V100-SXM2-16GB", "Tesla V100-PCIE-16GB", "V100 SXM2 16GB"), nvml_mib=16160, nvlink=True),
    _gpu("V100 32GB", "v100-32gb", 32, (7, 0), 125.0, 900, 0.60, ON_DEMAND, DATACENTER.format("v100"),
         ("Tesla V100-SXM2-32GB", "Tesla V100-PCIE-32GB", "Tesla V100S-PCIE-32GB", "V100 SXM2 32GB"), nvlink=True),
    # datasheet: 312 bf16 dense; 1555 GB/s (SXM4 and PCIe alike); NVML reports 40960 MiB (SXM4)
    _gpu("A100 40GB", "a100-40gb", 40, (8, 0), 312.0, 1555, 1.29, ON_DEMAND, DATACENTER.format("a100"),
         ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB", "A100 40GB SXM"), nvml_mib=40960, nvlink=True),
    # datasheet: 312 bf16 dense, 2039 GB/s (SXM4); NVML reports 81920 MiB
    _gpu("A100 80GB", "a100-80gb", 80, (8, 0), 312.0, 2039, 1.79, ON_DEMAND, DATACENTER.format("a100"),
         ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM"), nvml_mib=81920, nvlink=True),
    _gpu("A100 80GB PCIe", "a100-80gb-pcie", 80, (8, 0), 312.0, 1935, 1.64, ON_DEMAND,
         DATACENTER.format("a100"), ("NVIDIA A100 80GB PCIe", "A100-PCIE-80GB")),
    # datasheet: 1979 bf16 with sparsity -> 989.5 dense, 3.35 TB/s; NVML reports 81559 MiB
    _gpu("H100 SXM", "h100-sxm", 80, (9, 0), 989.5, 3350, 2.99, ON_DEMAND, DATACENTER.format("h100"),
         ("NVIDIA H100 80GB HBM3", "H100", "H100 80GB", "H100 SXM5", "H100-SXM5-80GB"), nvml_mib=81559, nvlink=True),
    # datasheet: 1513 bf16 with sparsity -> 756.5 dense, 2 TB/s; NVML reports 81559 MiB
    _gpu("H100 PCIe", "h100-pcie", 80, (9, 0), 756.5, 2000, 2.49, ON_DEMAND, DATACENTER.format("h100"),
         ("NVIDIA H100 PCIe",), nvml_mib=81559),
    # datasheet: 1671 bf16 with sparsity -> 835.5 dense, 3.9 TB/s, 94 GB
    _gpu("H100 NVL", "h100-nvl", 94, (9, 0), 835.5, 3900, 2.79, ON_DEMAND, DATACENTER.format("h100"),
         ("NVIDIA H100 NVL",), nvlink=True),
    # datasheet: same compute as H100 SXM, 141 GB at 4.8 TB/s; NVML reports 143771 MiB
    _gpu("H200", "h200", 141, (9, 0), 989.5, 4800, 3.79, ON_DEMAND, DATACENTER.format("h200"),
         ("NVIDIA H200", "H200 SXM", "H200 141GB"), nvml_mib=143771, nvlink=True),
    # datasheet: 1671 bf16 with sparsity -> 835.5 dense; 143771 MiB assumed like the H200 SXM
    _gpu("H200 NVL", "h200-nvl", 141, (9, 0), 835.5, 4800, 3.50, ON_DEMAND,
         DATACENTER.format("h200"), ("NVIDIA H200 NVL",), nvml_mib=143771, assumed=True, nvlink=True),
    # HGX B200: 4.5 PFLOP/s bf16 with sparsity -> 2250 dense, 8 TB/s, 180 GB per GPU
    _gpu("B200", "b200", 180, (10, 0), 2250.0, 8000, 5.99, ON_DEMAND, DATACENTER.format("hgx"),
         ("NVIDIA B200", "B200 SXM"), nvlink=True),
]

# SM count, non-tensor FP32 TFLOP/s, PCIe generation (x16), NVLink GB/s per GPU per direction, GPUs per NVLink
# domain, PCIe peer-to-peer. Sources: the same datasheets/whitepapers as each entry above (SMs and FP32 rates are
# in their spec tables); NVLink per direction is half the datasheet's bidirectional figure (NVLink 2: 300,
# 3: 600, 4: 900, 5: 1800 GB/s; ml-engineering network/README.md, "Intra-node networking"); H100 NVL bridges
# join pairs (600 GB/s), H200 NVL bridges join up to 4 GPUs (900 GB/s). GeForce drivers refuse PCIe
# peer-to-peer, so NCCL stages through host memory (tinygrad/open-gpu-kernel-modules exists to undo that).
UNITS_AND_LINKS: dict[str, tuple[int, float, int, float, int, bool]] = {
    "rtx-2080-ti": (68, 13.4, 3, 0, 0, False), "rtx-3060": (28, 12.7, 4, 0, 0, False),
    "rtx-3080": (68, 29.8, 4, 0, 0, False), "rtx-3090": (82, 35.6, 4, 0, 0, False),
    "rtx-3090-ti": (84, 40.0, 4, 0, 0, False), "rtx-4060-ti-16gb": (34, 22.1, 4, 0, 0, False),
    "rtx-4080": (76, 48.7, 4, 0, 0, False), "rtx-4080-super": (80, 52.2, 4, 0, 0, False),
    "rtx-4090": (128, 82.6, 4, 0, 0, False), "rtx-5080": (84, 56.3, 5, 0, 0, False),
    "rtx-5090": (170, 104.8, 5, 0, 0, False),
    "rtx-a4000": (48, 19.2, 4, 0, 0, True), "rtx-a5000": (64, 27.8, 4, 0, 0, True),
    "rtx-a6000": (84, 38.7, 4, 0, 0, True), "rtx-6000-ada": (142, 91.1, 4, 0, 0, True),
    "a40": (84, 37.4, 4, 0, 0, True), "t4": (40, 8.1, 3, 0, 0, True), "a10": (72, 31.2, 4, 0, 0, True),
    "a10g": (80, 31.2, 4, 0, 0, True), "l4": (58, 30.3, 4, 0, 0, True), "l40": (142, 90.5, 4, 0, 0, True),
    "l40s": (142, 91.6, 4, 0, 0, True),
    "v100-16gb": (80, 15.7, 3, 150, 8, True), "v100-32gb": (80, 15.7, 3, 150, 8, True),
    "a100-40gb": (108, 19.5, 4, 300, 8, True), "a100-80gb": (108, 19.5, 4, 300, 8, True),
    "a100-80gb-pcie": (108, 19.5, 4, 0, 0, True),
    "h100-sxm": (132, 67.0, 5, 450, 8, True), "h100-pcie": (114, 51.0, 5, 0, 0, True),
    "h100-nvl": (132, 60.0, 5, 300, 2, True), "h200": (132, 67.0, 5, 450, 8, True),
    "h200-nvl": (132, 60.0, 5, 450, 4, True), "b200": (148, 80.0, 5, 900, 8, True),
}


def _with_units(spec: GpuSpec) -> GpuSpec:
    sms, fp32, gen, nvlink_gbs, group, p2p = UNITS_AND_LINKS[spec.key]
    return replace(spec, sms=sms, fp32_tflops=fp32, pcie_gen=gen, nvlink_gbs=float(nvlink_gbs),
                   nvlink_group=group, pcie_p2p=p2p)


CATALOG = [_with_units(spec) for spec in CATALOG]

# Words that vendors and NVML put in names but that do not tell cards apart.
NOISE = {"nvidia", "geforce", "tesla", "quadro", "generation"}


def _tokens(text: str) -> tuple[str, ...]:
    """'NVIDIA A100-SXM4-80GB' -> ('a', '100', 'sxm', '4', '80', 'gb'): letters and digits split apart."""
    words = re.findall(r"[a-z]+|\d+", text.lower())
    return tuple(word for word in words if word not in NOISE)


def _names(spec: GpuSpec) -> tuple[str, ...]:
    return (spec.name, spec.key, *spec.aliases)


_BY_TOKENS: dict[tuple[str, ...], GpuSpec] = {}
for _spec in CATALOG:
    for _name in _names(_spec):
        _BY_TOKENS.setdefault(_tokens(_name), _spec)

_COUNT_BEFORE = re.compile(r"^\s*(\d+)\s*[x×*]\s*(.+?)\s*$", re.IGNORECASE)   # 8xH100, 8 x H100
# h100x8, H100 x 8; an x right after a letter is part of the name ('RTX 4090')
_COUNT_AFTER = re.compile(r"^\s*(.+?)\s*(?<![a-z])[x×*]\s*(\d+)\s*$", re.IGNORECASE)


MAX_COUNT = 4096   # GPUs per node: more is a typo
_BAD_COUNT = re.compile(r"(?<![a-z])[x×*]\s*[-+]\s*\d|(?<![a-z])[x×*]\s*\d+[.,]\d|^\s*[-+]?\d+[.,]\d+\s*[x×*]",
                        re.IGNORECASE)


def split_count(text: str) -> tuple[str, int]:
    """'h100x8' / '8xH100' -> ('h100', 8); a plain name counts 1."""
    if _BAD_COUNT.search(text):
        raise InputError(f'"{_short(text)}" gives a GPU count that is not a whole number; write e.g. "h100x8".')
    for pattern, name_group, count_group in ((_COUNT_AFTER, 1, 2), (_COUNT_BEFORE, 2, 1)):
        match = pattern.match(text)
        if match:
            return match.group(name_group), _count(match.group(count_group), text)
    return text.strip(), 1


def _count(digits: str, text: str) -> int:
    count = int(digits[:12]) if len(digits) <= 12 else MAX_COUNT + 1
    if not 1 <= count <= MAX_COUNT:
        raise InputError(f'"{_short(text)}" asks for {digits[:12]} GPUs per node; give a count from 1 to {MAX_COUNT}, '
                         'e.g. "h100x8".')
    return count


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


_COUNT_AFTER_LETTER = re.compile(r"^\s*(.+?[a-z])\s*[x×*]\s*(\d+)\s*$", re.IGNORECASE)  # a100-80gbx8, l40sx4


def find_gpu(text: str) -> tuple[GpuSpec, int]:
    """The catalog card a user's spelling names, and how many of it ('8xH100' -> 8)."""
    words = _tokens(text)
    if len(text) > 100 or len(words) != len(set(words)):   # no card's name repeats a word
        raise InputError(f'"{_short(text)}" is not a GPU name; name one card, e.g. {opt("gpu")} "RTX 4090" '
                         "(`fitplan gpus --catalog` lists them).")
    match = _COUNT_AFTER_LETTER.match(text)
    if match:
        # 'x4' after a letter may be a count ('l40sx4') or part of a name: a count only if the rest is a card
        try:
            spec = _find_one(match.group(1), text)
        except InputError:
            spec = None
        if spec is not None:
            return spec, _count(match.group(2), text)
    name, count = split_count(text)
    return _find_one(name, text), count


def _find_one(name: str, text: str) -> GpuSpec:
    query = _tokens(name)
    if not query:
        raise InputError(f'"{text}" names no GPU; try e.g. {opt("gpu")} "RTX 4090" '
                        "(`fitplan gpus --catalog` lists them).")
    if query in _BY_TOKENS:
        return _BY_TOKENS[query]
    shortened = _abbreviated(query)
    if shortened:
        return _pick_one(text, shortened)
    # A longer name ('NVIDIA GeForce RTX 4090 D'): the most specific entry whose words it all contains.
    spec = _match_contained(query, memory_bytes=None)
    if spec is not None:
        return spec
    raise InputError(_unknown_message(text, name))


def _droppable(name: tuple[str, ...]) -> set[str]:
    """Words of a name a user may leave out: the 'rtx' prefix, the form factor 'sxm', the memory size."""
    sizes = {word for word, after in zip(name, name[1:]) if word.isdigit() and after == "gb"}
    return {"rtx", "sxm", "gb"} | sizes


def _abbreviated(query: tuple[str, ...]) -> list[tuple[int, GpuSpec]]:
    """Entries the query abbreviates ('4090', 'a100'), fewest left-out words first.

    Only droppable words may be left out, so 'rtx 4060' does not become the 4060 Ti."""
    ranked = []
    for spec in CATALOG:
        left_out = [len(name) - len(query) for name in map(_tokens, _names(spec))
                    if set(query) <= set(name) and set(name) - set(query) <= _droppable(name)]
        if left_out:
            ranked.append((min(left_out), spec))
    return sorted(ranked, key=lambda pair: pair[0])


def _pick_one(text: str, ranked: list[tuple[int, GpuSpec]]) -> GpuSpec:
    best = [spec for score, spec in ranked if score == ranked[0][0]]
    if len(best) == 1:
        return best[0]
    raise InputError(f'GPU "{text}" could be {_or([spec.name for spec in best])}; '
                    f'name one, e.g. {opt("gpu")} "{best[-1].name}".')


def _match_contained(query: tuple[str, ...], memory_bytes: int | None) -> GpuSpec | None:
    """The entry with the most words, all found in `query`; ties go to the closest memory size."""
    best, chosen = None, None
    for order, spec in enumerate(CATALOG):
        sizes = [len(name) for name in map(_tokens, _names(spec)) if name and set(name) <= set(query)]
        if not sizes:
            continue
        memory_gap = abs(spec.memory_bytes - memory_bytes) if memory_bytes else 0
        rank = (-max(sizes), memory_gap, order)
        if best is None or rank < best:
            best, chosen = rank, spec
    return chosen


def match_nvml_name(name: str, memory_bytes: int | None = None) -> GpuSpec | None:
    """The catalog entry of a probed card (its NVML name and total memory), or None when unknown.

    The memory only breaks ties between entries whose names both fit (e.g. a MIG-less 40 vs 80 GB
    A100 named without its size); the probe's own memory numbers always win over the catalog's."""
    query = _tokens(name)
    if not query:
        return None
    if query in _BY_TOKENS:
        return _BY_TOKENS[query]
    return _match_contained(query, memory_bytes)


def _unknown_message(text: str, name: str) -> str:
    query = _tokens(name)
    # Entries that hold every word first ('rtx 4060' -> RTX 4060 Ti), then ones spelled alike.
    longer = [spec.name for spec in CATALOG if any(set(query) <= set(_tokens(n)) for n in _names(spec))]
    spellings = {" ".join(_tokens(n)): spec.name for spec in CATALOG for n in (spec.name, spec.key)}
    close = difflib.get_close_matches(" ".join(query), list(spellings), n=6, cutoff=0.5)
    suggestions = list(dict.fromkeys(longer + [spellings[c] for c in close]))[:3]
    hint = f" (did you mean {_or(suggestions)}?)" if suggestions else ""
    return f'Unknown GPU "{text}"{hint}; `fitplan gpus --catalog` lists the cards fitplan knows.'


def _or(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" or {names[-1]}"


def gpu_names() -> list[str]:
    return [spec.name for spec in CATALOG]
