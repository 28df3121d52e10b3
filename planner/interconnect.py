"""How fast GPUs exchange data: within a node (NVLink, PCIe with or without peer-to-peer), between nodes
(InfiniBand, Ethernet) and with the host (offload). `Links` holds the bus bandwidths NCCL's collectives reach
per GPU; `--interconnect` overrides the defaults a card implies.

Bus bandwidth ("busbw", nccl-tests' unit) is what one rank moves per second in a ring collective: an
all-gather or reduce-scatter of S bytes over N ranks moves (N-1)/N*S per rank, an all-reduce 2(N-1)/N*S.
"""
from __future__ import annotations

from dataclasses import dataclass

from common.errors import InputError, opt
from planner.rates import DeviceRates

INTRA = ("nvlink", "pcie")
INTER = ("ib", "ethernet")
CHOICES = INTRA + INTER

# NCCL over NVLink reaches ~82% of the link's one-direction rate: 370 of 450 GB/s on H100 ("450GB/s is the line
# rate. With the protocol overhead (~20%) NCCL can get an effective NVLink bandwidth of 370GB/s", NCCL's
# maintainer in NVIDIA/nccl-tests#212); 235 of 300 GB/s on A100 (ml-engineering network/README.md).
NVLINK_EFFICIENCY = 0.82
# NCCL's own model of a PCIe x16 link (GB/s): 24 for Gen4 ("PCI[24.0]" in NCCL's topology log, NVIDIA/nccl-tests
# #307), scaled by generation; between CPU sockets 10 ("SYS 10.0", same log).
PCIE_NCCL_GBS = {3: 12.0, 4: 24.0, 5: 48.0}
CROSS_SOCKET_GBS = 10.0
GPUS_PER_SOCKET = 4          # a PCIe server puts half its 8 slots on each socket (more GPUs cross UPI/QPI)
# Without peer-to-peer NCCL copies through pinned host memory (its SHM transport): each byte crosses PCIe
# twice and the host copy adds latency; taken as half the peer-to-peer rate (an assumption).
SHM_FACTOR = 0.5
# Host <-> GPU copies reach ~88% of the PCIe rate (55.4 of 63 GB/s Gen5 x16, nvbandwidth; ml-engineering
# network/README.md, "PCIe"); spec x16 rates per direction: Gen3 15.75, Gen4 31.5, Gen5 63 GB/s.
PCIE_SPEC_GBS = {3: 15.75, 4: 31.5, 5: 63.0}
HOST_COPY_EFFICIENCY = 0.88
# Between nodes an NCCL collective leans on every NIC of the node at once, at ~73% of the wire rate (4 x 8 B200
# over 8 x 400 Gb/s EFA: 377 GB/s busbw; ml-engineering network/README.md, "Inter-node speed depends on
# intra-node speed"). `ib`: one NIC per GPU, HDR 200 Gb/s before Hopper, NDR 400 Gb/s from Hopper on (DGX A100:
# 8 x ConnectX-6 HDR; DGX H100: 8 x ConnectX-7 NDR, same README's inter-node table). `ethernet`: one 100 Gb/s
# NIC per node (the README's "typical node ... a single 100-400Gbps connection").
NIC_EFFICIENCY = 0.73
IB_GBPS = {"volta": 100, "turing": 100, "ampere": 200, "ada": 200}   # per GPU; newer: 400
ETHERNET_GBPS = 100                                                   # per node
# Latency of one collective (the fixed part of its time): ~50 us inside a node (1 MiB all-reduce at 36 GB/s
# busbw on 8 B200, ml-engineering's table), ~350 us across nodes (1 MiB at 5.4 GB/s on 4 nodes, same table).
LATENCY_INTRA_S = 50e-6
LATENCY_INTER_S = 350e-6


@dataclass(frozen=True)
class Links:
    """Per-GPU bus bandwidths (bytes/s) of this plan's collectives and host copies."""

    node_bytes_per_s: float            # a ring over one node's GPUs
    cluster_bytes_per_s: float         # a ring over every GPU of the plan (the slowest hop: node or network)
    host_bytes_per_s: float            # one GPU to or from host memory (offload)
    latency_s: float                   # one collective over every GPU
    intra: str                         # nvlink | pcie
    inter: str | None                  # ib | ethernet when the plan spans nodes

    def seconds(self, bytes_per_rank: float, collectives: float = 0, within_node: bool = False) -> float:
        rate = self.node_bytes_per_s if within_node else self.cluster_bytes_per_s
        latency = LATENCY_INTRA_S if within_node else self.latency_s
        return collectives * latency + bytes_per_rank / rate


def parse(value: str | None) -> tuple[str | None, str | None]:
    """`--interconnect nvlink`, `pcie,ethernet`, `ib`: (within a node, between nodes), either may be None."""
    if not value:
        return None, None
    words = [w.strip().lower() for w in value.split(",") if w.strip()]
    unknown = [w for w in words if w not in CHOICES]
    intra = [w for w in words if w in INTRA]
    inter = [w for w in words if w in INTER]
    if unknown or len(intra) > 1 or len(inter) > 1:
        raise InputError(f"{opt('interconnect')} takes one link within a node (nvlink or pcie) and/or one between "
                         f"nodes (ib or ethernet), e.g. \"pcie,ethernet\"; got \"{value}\".")
    return (intra or [None])[0], (inter or [None])[0]


def default_intra(rates: DeviceRates) -> str:
    """NVLink for SXM and NVL boards, PCIe for everything else."""
    return "nvlink" if rates.nvlink_gbs > 0 else "pcie"


def default_inter(rates: DeviceRates) -> str:
    """InfiniBand with NVLink boards (DGX/HGX), Ethernet with PCIe cards."""
    return "ib" if rates.nvlink_gbs > 0 else "ethernet"


def links_for(rates: DeviceRates, gpus: int, nodes: int, interconnect: str | None = None) -> Links:
    intra, inter = parse(interconnect)
    intra = intra or default_intra(rates)
    inter = (inter or default_inter(rates)) if nodes > 1 else None
    within = _intra_bytes_per_s(rates, intra, gpus)
    between = _inter_bytes_per_s(rates, inter, gpus) if inter else within
    host = PCIE_SPEC_GBS.get(rates.pcie_gen, 31.5) * 1e9 * HOST_COPY_EFFICIENCY
    latency = LATENCY_INTER_S if inter else LATENCY_INTRA_S
    return Links(within, min(within, between), host, latency, intra, inter)


def _intra_bytes_per_s(rates: DeviceRates, intra: str, gpus: int) -> float:
    pcie = _pcie_bytes_per_s(rates, gpus)
    if intra == "pcie" or rates.nvlink_gbs <= 0:
        return pcie
    if rates.nvlink_group and gpus > rates.nvlink_group:
        return pcie               # bridges join pairs or quads: a ring over more GPUs crosses PCIe
    return rates.nvlink_gbs * 1e9 * NVLINK_EFFICIENCY


def _pcie_bytes_per_s(rates: DeviceRates, gpus: int) -> float:
    gbs = PCIE_NCCL_GBS.get(rates.pcie_gen, 24.0)
    if gpus > GPUS_PER_SOCKET:
        gbs = min(gbs, CROSS_SOCKET_GBS)
    return gbs * 1e9 * (1.0 if rates.pcie_p2p else SHM_FACTOR)


def _inter_bytes_per_s(rates: DeviceRates, inter: str, gpus: int) -> float:
    if inter == "ethernet":
        gbps = ETHERNET_GBPS
    else:
        gbps = IB_GBPS.get(rates.arch, 400) * gpus
    return gbps / 8 * 1e9 * NIC_EFFICIENCY


def network_links(rates: DeviceRates, gpus: int, nodes: int, nic_gbps_per_node: float) -> Links:
    """Links for a measured cluster whose network is known in Gb/s per node (benchmarks use this)."""
    base = links_for(rates, gpus, 1)
    between = nic_gbps_per_node / 8 * 1e9 * NIC_EFFICIENCY if nodes > 1 else base.node_bytes_per_s
    return Links(base.node_bytes_per_s, min(base.node_bytes_per_s, between), base.host_bytes_per_s,
                 LATENCY_INTER_S if nodes > 1 else LATENCY_INTRA_S, base.intra, "ib" if nodes > 1 else None)
