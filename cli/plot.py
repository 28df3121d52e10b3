"""Pictures of the planner's answers, for `estimate --plot` and `plan --plot`: memory over one training step,
and the candidate plans side by side.

Pure functions from the JSON contract's dicts (`planner.serialize`) to a figure, so the picture, the table
and `--json` always say the same. PNG and SVG come from matplotlib; HTML is one self-contained file (the SVG
inline, the data it shows as JSON beside it, no script or stylesheet fetched). matplotlib is imported only
when a picture is drawn. Colours: the Okabe-Ito palette, which colour-blind readers tell apart.
"""
from __future__ import annotations

import html
import io
import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from common.errors import EnvironmentProblem, InputError, opt
from common.files import write_text
from common.units import GiB
from planner.memory import COMPONENTS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = {".png": "png", ".svg": "svg", ".html": "html", ".htm": "html"}
# Okabe & Ito (2008), "Color Universal Design", eight colours; a tint of the weights' blue for gathered weights,
# greys of three lightnesses for the rest
PALETTE = {"weights": "#0072B2", "quant_constants": "#56B4E9", "adapters": "#009E73", "gradients": "#D55E00",
           "optimizer_states": "#E69F00", "master_weights": "#CC79A7", "gathered_weights": "#99C7E0",
           "comm_buffers": "#000000", "activations": "#F0E442", "logits": "#999999", "temporary": "#DDDDDD"}
LABELS = {"weights": "weights", "quant_constants": "quantization constants", "adapters": "LoRA adapters",
          "gradients": "gradients", "optimizer_states": "optimizer states", "master_weights": "fp32 master weights",
          "gathered_weights": "gathered weights", "comm_buffers": "communication buffers",
          "activations": "activations", "logits": "logits", "temporary": "temporary"}
PHASE_NAMES = {"forward": "forward", "backward": "backward", "optimizer_step": "optimizer step"}
BAND_NAMES = {**PHASE_NAMES, "optimizer_step": "optimizer\nstep"}   # its band is narrow
INK, MUTED = "#000000", "#555555"


def plot_format(path: str | Path) -> str:
    """png, svg or html from the file name, or one sentence saying what --plot takes."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{opt('plot')} takes a file ending in .png, .svg or .html, not {Path(path).name[:80]!r}; "
                         "the ending chooses the format.")
    if Path(path).is_dir():
        raise InputError(f"{opt('plot')} {str(path)[:120]} is a folder; give the name of the picture file.")
    return FORMATS[suffix]


def require_matplotlib() -> None:
    """Checked before any work, so a missing library fails at once, not after a trace."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise EnvironmentProblem(f"{opt('plot')} draws with matplotlib, which is not installed; install it with "
                                 "pip install 'fitplan[web]'.") from None


def write_picture(path: str | Path, figure: Callable[[], "Figure"], title: str, data: dict) -> Path:
    """Draw and write the picture all at once: an existing picture is replaced, a half-written one never left."""
    fmt = plot_format(path)
    fig = figure()
    return write_text(path, render(fig, fmt, title, data), force=True, option="plot")


def render(fig: "Figure", fmt: str, title: str, data: dict) -> str | bytes:
    """The file's content: PNG bytes, SVG text, or an HTML page with the SVG inline and the data beside it."""
    buffer = io.BytesIO()
    # no date, a fixed id salt: the same answer draws the same file
    fig.savefig(buffer, format="svg" if fmt == "html" else fmt, dpi=150,
                metadata={"Date": None} if fmt != "png" else {"Software": None})
    if fmt == "png":
        return buffer.getvalue()
    svg = buffer.getvalue().decode("utf-8")
    return svg if fmt == "svg" else html_page(title, svg[svg.index("<svg"):], data)


def html_page(title: str, svg: str, data: dict) -> str:
    """One self-contained page: the picture, and the JSON it was drawn from for anyone who wants the numbers."""
    payload = json.dumps(data, indent=1).replace("</", "<\\/")  # a "</script>" inside a string must not end the block
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            '<style>body{font-family:system-ui,sans-serif;margin:1.5em;color:#111}svg{max-width:100%;height:auto}'
            '</style>\n</head>\n<body>\n'
            f'<h1 style="font-size:1.2em">{html.escape(title)}</h1>\n{svg}\n'
            '<p>Drawn by fitplan. The data behind the picture (the same JSON <code>--json</code> prints):</p>\n'
            f'<script type="application/json" id="fitplan-data">\n{payload}\n</script>\n</body>\n</html>\n')


def _figure(width: float, height: float) -> "Figure":
    import matplotlib
    from matplotlib.figure import Figure
    matplotlib.rcParams["svg.hashsalt"] = "fitplan"   # stable ids in SVG output
    return Figure(figsize=(width, height), layout="constrained")


def in_gib(value: float) -> float:
    """Bytes as a number of GiB (an axis value; `common.units.gib` writes sizes as text)."""
    return value / GiB


# --- memory over one training step -----------------------------------------------------------------------

def timeline_figure(data: dict, measured: dict | None = None, note: str | None = None) -> "Figure":
    """Memory over one step (`timeline_dict`), stacked by component, with the card, the usable line, the
    overheads on top of the peak and the peak itself; `measured`: traced phase peaks {phase: bytes} drawn over."""
    points = data["timeline"]["points"]
    edges = moment_edges(points)
    fig = _figure(12, 6.2)
    ax = fig.add_subplot()
    _stack(ax, points, edges)
    _phase_bands(ax, points, edges)
    top = _timeline_top(data, measured)
    _reference_lines(ax, data, top)
    ax.set_ylim(0, top * 1.18)
    _mark_peak(ax, data["timeline"]["peak"], edges)
    if measured:
        _measured_phases(ax, points, edges, measured)
    _layer_ticks(ax, points, edges)
    ax.set_ylabel("GiB per GPU")
    ax.set_xlim(0, edges[-1])
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.suptitle(f"{data['model']}: memory over one training step, per GPU", fontsize=13, x=0.01, ha="left")
    ax.set_title(config_line(data) + (f"\n{note}" if note else ""), fontsize=9, loc="left", color=MUTED)
    return fig


def moment_edges(points: list[dict]) -> list[float]:
    """Where each moment starts on the x axis (and where the last ends): one unit each, the optimizer step
    (one moment, but a phase of its own) widened so that it can be seen."""
    wide = max(1.0, 0.08 * len(points))
    edges = [0.0]
    for point in points:
        edges.append(edges[-1] + (wide if point["phase"] == "optimizer_step" else 1.0))
    return edges


def _stack(ax, points: list[dict], edges: list[float]) -> None:
    """Each component a band on the ones below it, flat over each moment (memory holds until the next)."""
    below = [0.0] * len(points)
    for name in COMPONENTS:
        values = [in_gib(p["components"][name]) for p in points]
        if not any(values):
            continue
        above = [b + v for b, v in zip(below, values)]
        ax.fill_between(edges, below + below[-1:], above + above[-1:], step="post", color=PALETTE[name],
                        label=LABELS[name], linewidth=0)
        below = above


def config_line(data: dict) -> str:
    """One line of what was planned: method, precision, batch, sequence, checkpointing, GPUs."""
    c = data["config"]
    gpus = c["gpus"] * c["nodes"]
    card = data.get("gpu", {}).get("name", "no card named")
    parts = [c["method"], c["precision"], c["optimizer"], f"micro-batch {c['micro_batch']} x {c['seq_len']:,} tokens",
             "grad-ckpt: each layer recomputed before its backward" if c["grad_ckpt"] else "no checkpointing",
             f"{gpus} x {card}" + (f", {c['sharding']}" if c["sharding"] != "none" else "")]
    return " | ".join(parts)


def _phase_spans(points: list[dict]) -> list[tuple[str, int, int]]:
    """(phase, first index, last index) of each phase, in order."""
    spans: list[tuple[str, int, int]] = []
    for i, point in enumerate(points):
        if spans and spans[-1][0] == point["phase"]:
            spans[-1] = (point["phase"], spans[-1][1], i)
        else:
            spans.append((point["phase"], i, i))
    return spans


def _phase_bands(ax, points: list[dict], edges: list[float]) -> None:
    """Shade the phases alternately and name each at the top."""
    transform = ax.get_xaxis_transform()
    for k, (phase, first, last) in enumerate(_phase_spans(points)):
        left, right = edges[first], edges[last + 1]
        if k % 2 == 0:
            ax.axvspan(left, right, color="#f0f0f0", zorder=0)
        ax.text((left + right) / 2, 0.985, BAND_NAMES.get(phase, phase), transform=transform, ha="center",
                va="top", fontsize=9, color=MUTED)


def _timeline_top(data: dict, measured: dict | None) -> float:
    """The height the picture needs, in GiB: the card too, unless it would flatten the step to a sliver."""
    needed = in_gib(max([data["per_gpu"]["total_bytes"], data["timeline"]["peak"]["allocated_bytes"],
                      *(measured or {}).values()]))
    card = in_gib(data["gpu"]["memory_bytes"]) if "gpu" in data else 0.0
    return max(card, needed) if card <= 2.5 * needed else needed


def _reference_lines(ax, data: dict, top: float) -> None:
    """The card and the usable line (when a card is known), and what the allocator and CUDA add on the peak."""
    per_gpu = data["per_gpu"]
    if "gpu" in data:
        card, usable = in_gib(data["gpu"]["memory_bytes"]), in_gib(data["usable_bytes"])
        above = " (above the picture)"
        ax.axhline(card, color=INK, linewidth=1.6, label=f"card: {card:.1f} GiB" + (above if card > top else ""))
        ax.axhline(usable, color=INK, linewidth=1.2, linestyle="--",
                   label=f"usable: {usable:.1f} GiB ({data['margin']:.0%} kept free)" + (above if usable > top else ""))
    ax.axhline(in_gib(per_gpu["reserved_peak_bytes"]), color=MUTED, linewidth=1, linestyle="-.",
               label=f"peak + allocator reserve: {in_gib(per_gpu['reserved_peak_bytes']):.1f} GiB")
    extra = (" + NCCL buffers" if per_gpu.get("communicator_bytes") else "") + (" + paged states" if per_gpu["paged_bytes"] else "")
    ax.axhline(in_gib(per_gpu["total_bytes"]), color=MUTED, linewidth=1.2, linestyle=":",
               label=f"+ CUDA context{extra} = total: {in_gib(per_gpu['total_bytes']):.1f} GiB")


def _mark_peak(ax, peak: dict, edges: list[float]) -> None:
    x, y = (edges[peak["index"]] + edges[peak["index"] + 1]) / 2, in_gib(peak["allocated_bytes"])
    ax.plot([x], [y], marker="v", color=INK, markersize=8, zorder=5, linestyle="none")
    right, low = x < edges[-1] / 2, y < 0.55 * ax.get_ylim()[1]   # the label on the sides with room
    ax.annotate(f"peak {y:.2f} GiB allocated\nin {PHASE_NAMES.get(peak['phase'], peak['phase'])} ({peak['step']})",
                xy=(x, y), xytext=(24 if right else -24, 30 if low else -34), textcoords="offset points",
                ha="left" if right else "right", va="bottom" if low else "top", fontsize=8.5, zorder=7,
                arrowprops={"arrowstyle": "-", "color": INK, "linewidth": 0.8},
                bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": MUTED, "linewidth": 0.6})


def _measured_phases(ax, points: list[dict], edges: list[float], measured: dict) -> None:
    """Each traced phase peak as a bar across its phase, so prediction and measurement meet in one picture."""
    labelled = False
    for phase, first, last in _phase_spans(points):
        if phase not in measured:
            continue
        y, left, right = in_gib(measured[phase]), edges[first], edges[last + 1]
        ax.hlines(y, left, right, colors=INK, linewidth=2.4, zorder=6,
                  label=None if labelled else "measured phase peak (trace)")
        ax.plot([(left + right) / 2], [y], marker="D", color=INK, markersize=5, zorder=6, linestyle="none")
        labelled = True


def _layer_ticks(ax, points: list[dict], edges: list[float]) -> None:
    """A handful of layer numbers under each pass (the top layer only once, where the passes meet)."""
    layers = max([p["layer"] or 0 for p in points])
    every = max(1, -(-layers // 4))
    shown = {1, *range(every, layers, every)}
    ticks = [i for i, p in enumerate(points) if (p["layer"] in shown or p["step"] == f"layer {layers} backward")
             and not p["step"].endswith("recompute")]
    ax.set_xticks([(edges[i] + edges[i + 1]) / 2 for i in ticks], [str(points[i]["layer"]) for i in ticks],
                  fontsize=8)
    ax.set_xlabel(f"layer: forward 1 to {layers}, backward {layers} to 1, then the optimizer step", fontsize=9)


def _top(ax) -> float:
    return max([ax.get_ylim()[1]] + [line.get_ydata()[0] for line in ax.get_lines() if len(line.get_ydata())])


# --- the candidate plans ---------------------------------------------------------------------------------

OVERHEADS = (("allocator reserve", "#FFFFFF", "////"), ("CUDA context", "#FFFFFF", "...."),
             ("NCCL buffers", "#FFFFFF", "----"), ("paged optimizer states", "#FFFFFF", "xxxx"))


def plans_figure(data: dict) -> "Figure":
    """The plans of `plan --json` side by side: memory per GPU stacked by component, then what the allocator
    and CUDA add, against the card and the usable line; predicted tokens/s on a second axis."""
    plans = data["plans"]
    fig = _figure(max(8.0, 1.3 * len(plans) + 5), 6.2)
    ax = fig.add_subplot()
    fig.suptitle(f"{data['model']}: the plans that fit, per GPU", fontsize=13, x=0.01, ha="left")
    if not plans:
        _nothing_fits(ax, data)
        return fig
    _plan_bars(ax, plans)
    gpu = data["hardware"]["gpus"][0]
    ax.axhline(in_gib(gpu["memory_bytes"]), color=INK, linewidth=1.6, label=f"card: {in_gib(gpu['memory_bytes']):.1f} GiB")
    ax.axhline(in_gib(data["usable_bytes"]), color=INK, linewidth=1.2, linestyle="--",
               label=f"usable: {in_gib(data['usable_bytes']):.1f} GiB ({data['margin']:.0%} kept free)")
    ax.set_xticks(range(len(plans)), [plan_label(p) for p in plans], fontsize=8)
    for tick, plan in zip(ax.get_xticklabels(), plans):
        tick.set_fontweight("bold" if plan["recommended"] else "normal")
    ax.set_ylabel("GiB per GPU")
    ax.set_ylim(0, _top(ax) * 1.12)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
    _speed_axis(ax, plans)
    _outline_recommended(ax, plans)
    reason = f"* recommended: {data['reason']}" if data["recommended"] is not None else data["reason"]
    ax.set_title(textwrap.fill(f"{len(data['hardware']['gpus'])} x {gpu['name']}. {reason}", 150), fontsize=8.5,
                 loc="left", color=MUTED)
    return fig


def _outline_recommended(ax, plans: list[dict]) -> None:
    """A heavy outline around the recommended plan's whole bar."""
    for i, plan in enumerate(plans):
        if plan["recommended"]:
            ax.bar([i], [in_gib(plan["per_gpu"]["total_bytes"])], 0.62, fill=False, edgecolor=INK, linewidth=2.2)


def plan_label(plan: dict) -> str:
    gpus = plan["gpus"] * plan["nodes"]
    return (f"{'* ' if plan['recommended'] else ''}{plan['method']}\n{plan['precision']}\n"
            f"mb {plan['micro_batch']}{', ckpt' if plan['grad_ckpt'] else ''}\n"
            f"{gpus} GPU{'s' if gpus > 1 else ''}{', ' + plan['sharding'] if plan['sharding'] != 'none' else ''}")


def _plan_bars(ax, plans: list[dict]) -> None:
    x = list(range(len(plans)))
    bottom = [0.0] * len(plans)
    for name in COMPONENTS:
        heights = [in_gib(p["per_gpu"]["components"][name]) for p in plans]
        if any(heights):
            ax.bar(x, heights, 0.62, bottom=bottom, color=PALETTE[name], label=LABELS[name])
            bottom = [b + h for b, h in zip(bottom, heights)]
    for (label, face, hatch), key in zip(OVERHEADS, ("reserve", "context", "communicator", "paged")):
        heights = [in_gib(_overhead(p["per_gpu"], key)) for p in plans]
        if any(heights):
            ax.bar(x, heights, 0.62, bottom=bottom, color=face, edgecolor=MUTED, hatch=hatch, linewidth=0.5,
                   label=label)
            bottom = [b + h for b, h in zip(bottom, heights)]


def _overhead(per_gpu: dict, key: str) -> int:
    """What must fit beside the allocated peak: total = reserved + context + NCCL buffers + paged."""
    if key == "reserve":
        return per_gpu["reserved_peak_bytes"] - per_gpu["allocated_peak_bytes"]
    return per_gpu[{"context": "cuda_context_bytes", "communicator": "communicator_bytes", "paged": "paged_bytes"}[key]]


def _speed_axis(ax, plans: list[dict]) -> None:
    """Predicted tokens/s on the right, when the card's rates are known; the legend gathers both axes."""
    speeds = [p["tokens_per_s"] for p in plans]
    handles, labels = ax.get_legend_handles_labels()
    if any(s is not None for s in speeds):
        right = ax.twinx()
        line = right.plot(range(len(plans)), [s if s is not None else float("nan") for s in speeds], marker="D",
                          linestyle="none", color=INK, markersize=7, label="tokens/s (predicted, right axis)")
        for i, speed in enumerate(speeds):
            if speed is not None:
                right.annotate(f"{speed:,.0f}", (i, speed), xytext=(0, 7), textcoords="offset points", ha="center",
                               fontsize=8, bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "linewidth": 0})
        right.set_ylabel("tokens/s, all GPUs (predicted)")
        right.set_ylim(0, max(s for s in speeds if s is not None) * 1.25)
        handles, labels = handles + line, labels + [line[0].get_label()]
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize=8, frameon=False)


def _nothing_fits(ax, data: dict) -> None:
    nothing = data.get("nothing_fits") or {}
    lines = ["Nothing fits."]
    if nothing.get("unsupported"):
        lines.append(nothing["unsupported"])
    elif nothing.get("min_total_bytes"):
        lines.append(f"The smallest plan needs {in_gib(nothing['min_total_bytes']):.1f} GiB per GPU; "
                     f"{in_gib(nothing['usable_bytes']):.1f} GiB is usable.")
    lines += [f"- {s}" for s in nothing.get("suggestions", [])]
    ax.axis("off")
    ax.text(0.0, 1.0, "\n".join(lines), transform=ax.transAxes, va="top", ha="left", fontsize=10, wrap=True)
