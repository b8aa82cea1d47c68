"""What a run costs before it runs: work items (images through one measured kind of pass), the
throughput of each kind of pass measured briefly on this machine, and the time they add up to.

A `Probe` names one kind of pass exactly as a stage runs it: a training step of a backbone, of a GAttANet
or of a related-work model (forward, backward, Adam), a model's own forward in eval mode (validation,
test), or the shared evaluations of `gattanet.engine.fast_eval` (the baseline and n GAttANets from one first
pass, with or without the Fig. 4c lesion patterns), at a batch size and on input of a dataset's shape.
`measure` times it on random images with freshly initialised models (throughput does not depend on the
weights); a `Work` item is `images` through one probe, and its time is images / images-per-second.

Figures are kept in a JSON file (`save_figures` / `load_figures`) together with the machine they were
measured on, and are used only on the same machine, device and precision. Nothing here reads params.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gattanet.engine import precision
from gattanet.errors import InputError
from gattanet.io import write_json
from gattanet.models.registry import backbone_taps
from gattanet.models.spec import AttentionSpec

FIGURES_FORMAT = "gattanet-bench-figures"
FIGURES_VERSION = 1
MODES = ("train", "eval", "shared", "shared-lesions", "shared-retrained", "states", "separate")
MACHINE_KEYS = ("cpu", "cpu_class", "cpu_count", "threads", "torch", "gpu")  # what must match for figures to be used


class FiguresError(InputError):
    """A figures file that cannot be read as one."""


# ---------------------------------------------------------------- what is measured


@dataclass(frozen=True)
class ModelSpec:
    """A model as the pipeline builds it, on input of shape (channels, size, size) with `classes` outputs.
    kind: "backbone", "gattanet", or a related-work method of the baselines stage ("se", ..., "wider-toy");
    methods need `attn` too: their size is matched to the GAttANet of those settings."""
    arch: str
    channels: int
    size: int
    classes: int
    kind: str = "backbone"
    attn: AttentionSpec | None = None

    def __post_init__(self) -> None:
        if self.kind != "backbone" and self.attn is None:
            raise ValueError(f"a {self.kind} model needs its attention settings (attn)")

    @property
    def label(self) -> str:
        shape = f"{self.arch} {self.channels}x{self.size}x{self.size}/{self.classes}"
        if self.kind == "backbone":
            return shape
        return f"{shape} {self.kind}({self.attn.label})"


@dataclass(frozen=True)
class Probe:
    """One kind of pass over a batch: `mode` (see MODES) of `model`, `batch` images per call; `n` models
    for the shared and separate evaluations; `l2` > 0 adds the weight penalty to a training step."""
    mode: str
    model: ModelSpec
    batch: int
    n: int = 1
    l2: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown probe mode {self.mode!r}; allowed: {', '.join(MODES)}")
        if self.batch < 1 or self.n < 1:
            raise ValueError(f"batch and n must be >= 1, got {self.batch}, {self.n}")
        if self.mode.startswith("shared") or self.mode == "states":
            if self.model.kind != "gattanet":
                raise ValueError(f"mode {self.mode} evaluates GAttANets; got a {self.model.kind} model")

    @property
    def key(self) -> str:
        """A readable, unique name: the figures file is keyed by it."""
        n = f"[n={self.n}]" if self.mode not in ("train", "eval") else ""
        l2 = "+l2" if self.mode == "train" and self.l2 > 0 else ""
        return f"{self.mode}{n}{l2} {self.model.label} b{self.batch}"

    @property
    def passes(self) -> int:
        """Backbone passes per image (a training pass counts its backward with it; a modulated second pass
        counts as a whole pass though it starts at the first modulated tap: an upper bound)."""
        own = model_passes(self.model)
        if self.mode in ("train", "eval"):
            return own
        second = self.model.attn.iterations
        if self.mode == "shared":
            return 1 + self.n * second
        if self.mode == "shared-lesions":  # the model's own pattern + every pattern but the empty one
            return 1 + self.n * second * len(lesion_patterns(self.model))
        if self.mode == "shared-retrained":  # one model per pattern but the empty one, per seed
            return 1 + self.n * second * (len(lesion_patterns(self.model)) - 1)
        if self.mode == "states":
            return 1
        return 1 + self.n * own  # separate


def model_passes(spec: ModelSpec) -> int:
    """Backbone passes of one forward of the model: 1 + iterations for a GAttANet, else 1."""
    return 1 + spec.attn.iterations if spec.kind == "gattanet" else 1


def lesion_patterns(spec: ModelSpec) -> list[str]:
    """The Fig. 4c patterns of the model's backbone (gattanet.models.lesion.ablation_patterns)."""
    from gattanet.models.lesion import ablation_patterns

    return [p["pattern"] for p in ablation_patterns(backbone_taps(spec.arch, spec.classes, spec.channels, spec.size))]


# ---------------------------------------------------------------- building the models


def _backbone(spec: ModelSpec, device: torch.device):
    from gattanet.models.registry import build_backbone
    from gattanet.engine.placement import place

    return place(build_backbone(spec.arch, spec.classes, spec.channels, input_size=spec.size), device)


def _gattanet(spec: ModelSpec, backbone, device: torch.device, lesion: str | None = None):
    from gattanet.engine.placement import place

    return place(spec.attn.build(backbone, lesion), device)


def placed_model(spec: ModelSpec, backbone, device: torch.device):
    """(model, trainable parameters) of `spec` on `backbone` (a fresh one for kind "backbone") on `device`,
    as the stages build it (gattanet.build.build_model)."""
    from gattanet.engine.placement import place
    from gattanet.build import build_model as build

    built = build(spec.kind, backbone, spec.attn)
    return place(built.model, device), built.trainable


def _call(probe: Probe, device: torch.device, dtype: torch.dtype | None) -> Callable[[int], Callable[[], object]]:
    """make(batch) -> a function that runs the probe's pass over one batch of that many random images."""
    from gattanet.engine.fast_eval import shared_logits, shared_states
    from gattanet.engine.train import Step, TrainConfig

    spec = probe.model
    torch.manual_seed(0)
    backbone = _backbone(spec, device).eval()
    if probe.mode == "train":
        model, trainable = placed_model(spec, backbone, device)
        step = Step(model, trainable, TrainConfig(1, 1, lr=1e-3, l2=probe.l2, amp=dtype is not None))
        model.train()
    elif probe.mode == "eval":
        model, _ = placed_model(spec, backbone, device)
        model.eval()
    elif probe.mode == "separate":
        models = [placed_model(spec, backbone, device)[0].eval() for _ in range(probe.n)]
    else:
        if probe.mode == "shared-retrained":
            patterns = [p for p in lesion_patterns(spec) if set(p) != {"."}]
            named = {f"{s}:{p}": _gattanet(spec, backbone, device, lesion=p).eval()
                     for s in range(probe.n) for p in patterns}
        else:
            named = {str(s): _gattanet(spec, backbone, device).eval() for s in range(probe.n)}
        lesions = lesion_patterns(spec) if probe.mode == "shared-lesions" else None
    g = torch.Generator().manual_seed(1)

    def make(batch: int) -> Callable[[], object]:
        x = torch.randn(batch, spec.channels, spec.size, spec.size, generator=g).to(device)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, spec.classes, (batch,), generator=g).to(device)
        if probe.mode == "train":
            return lambda: step(x, y, 1, 1)

        @torch.no_grad()
        def run():
            with precision.autocast(device, dtype):
                if probe.mode == "eval":
                    return int((model(x).float().argmax(1) == y).sum())
                if probe.mode == "separate":
                    return [int((m(x).float().argmax(1) == y).sum()) for m in [backbone, *models]]
                if probe.mode == "states":
                    return [s.query.float().cpu() for s in shared_states(named, x)[2].values()]
                return [int((v.float().argmax(1) == y).sum()) for v in shared_logits(named, x, lesions).values()]
        return run
    return make


# ---------------------------------------------------------------- measuring


def measure(probe: Probe, device: str | torch.device, amp: bool, seconds: float = 2.0,
            start_batch: int = 8, max_calls: int = 50) -> dict:
    """Images/s of `probe` on `device` (autocast as `amp` gives there), in about `seconds` of timing (the
    models are built first, untimed).

    The batch grows from `start_batch` fourfold up to the probe's own while a warm-up call and a timed
    call at the next size fit in what is left of `seconds` (judged from the last call); a pass too slow
    for that is measured at a smaller batch (`batch` in the result says which). Calls are then repeated
    until `seconds` are spent (at most `max_calls`) and the best is kept, as `gattanet-cli bench` does: a
    load spike from other processes slows single calls, never speeds them up. On CUDA every call is
    synchronised. Returns {"img_per_s", "batch", "requested_batch", "calls", "seconds", "measured"} or,
    when the pass does not fit in memory or refuses the settings, {"error", ...} without a rate."""
    from gattanet.cost.bench import timed

    device = torch.device(device)
    dtype = precision.autocast_dtype(device, amp)
    t_build = t_start = time.perf_counter()
    elapsed = lambda: time.perf_counter() - t_start  # noqa: E731
    base = {"requested_batch": probe.batch, "measured": now_iso()}
    try:
        make = _call(probe, device, dtype)
        t_start = time.perf_counter()  # building the models (and matching baselines' widths) is not timed
        batch = min(probe.batch, start_batch)
        fn = make(batch)
        fn()  # warm-up: first-call costs (kernel selection, optimiser state, caches)
        t = timed(fn, device)
        while batch < probe.batch:
            bigger = min(probe.batch, 4 * batch)
            if elapsed() + 2 * t * bigger / batch > seconds:
                break
            batch, fn = bigger, make(bigger)
            fn()
            t = timed(fn, device)
        times = [t]
        while elapsed() < seconds and len(times) < max_calls:
            times.append(timed(fn, device))
    except torch.OutOfMemoryError:
        return base | {"error": f"out of memory on {device} (batch {probe.batch})", "batch": None,
                       "seconds": round(elapsed(), 3)}
    except (ValueError, RuntimeError) as e:  # a setting the pass refuses (e.g. shared evaluation of iterations > 1)
        return base | {"error": f"{type(e).__name__}: {e}", "batch": None, "seconds": round(elapsed(), 3)}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return base | {"img_per_s": batch / min(times), "batch": batch, "calls": len(times),
                   "seconds": round(elapsed(), 3), "build_seconds": round(t_start - t_build, 3)}


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str | torch.device) -> dict:
    """What the figures depend on: CPU model and cores, torch's threads and version, the GPU (if the
    device is one), plus the host name (informative only)."""
    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu": _cpu_model(), "cpu_class": precision.cpu_class(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "gpu": gpu, "host": platform.node()}


CONTENDED_CORES = 0.5  # other processes' CPU use, in cores, above which rates measured now are not this machine's


def busy_cpu_seconds(stat: Path = Path("/proc/stat")) -> tuple[float, float] | None:
    """(CPU seconds every process has spent busy since boot, CPU seconds this process has spent): from the kernel's
    counters and os.times(); None where they cannot be read (not Linux)."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    except (OSError, ValueError):
        return None
    t = os.times()
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), t.user + t.system


def other_cores(before: tuple[float, float] | None, after: tuple[float, float] | None, wall: float) -> float | None:
    """How many cores' worth of CPU other processes used between two busy_cpu_seconds() readings `wall` seconds
    apart (None where either is missing or no time passed)."""
    if before is None or after is None or wall <= 0:
        return None
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall)


def same_machine(a: Mapping, b: Mapping) -> bool:
    return all(a.get(k) == b.get(k) for k in MACHINE_KEYS)


def figure_key(device: str | torch.device, prec: str, probe: Probe) -> str:
    return f"{torch.device(device).type}|{prec}|{probe.key}"


# ---------------------------------------------------------------- the figures file


@dataclass
class Figures:
    """Measured rates by `figure_key`, with the machine they were measured on and where they come from."""
    machine: dict
    rates: dict = field(default_factory=dict)  # figure_key -> measure()'s record
    path: Path | None = None
    saved: str | None = None  # when the file was last written

    def get(self, device, prec: str, probe: Probe) -> dict | None:
        return self.rates.get(figure_key(device, prec, probe))

    def put(self, device, prec: str, probe: Probe, record: dict) -> None:
        self.rates[figure_key(device, prec, probe)] = dict(record, source="measured")


def load_figures(path: str | Path) -> tuple[Figures | None, str | None]:
    """(figures, None) from a file `save_figures` wrote; (None, why) when there is none; FiguresError when
    the file is not one."""
    path = Path(path)
    if not path.is_file():
        return None, f"no figures file at {path}"
    try:
        d = json.loads(path.read_text())
        if not isinstance(d, dict) or d.get("format") != FIGURES_FORMAT:
            raise ValueError(f"format {d.get('format') if isinstance(d, dict) else None!r}, expected {FIGURES_FORMAT!r}")
        if d.get("version") != FIGURES_VERSION:
            raise ValueError(f"version {d.get('version')!r}, expected {FIGURES_VERSION}")
        rates = d["figures"]
        if not isinstance(rates, dict) or not isinstance(d["machine"], dict):
            raise ValueError("figures and machine must be mappings")
        for key, record in rates.items():
            rate = record.get("img_per_s") if isinstance(record, dict) else None
            if not isinstance(record, dict) or not (
                    isinstance(rate, (int, float)) and rate > 0 or "error" in record):
                raise ValueError(f"figure {key!r} is not a record with a positive img_per_s or an error")
    except (OSError, ValueError, KeyError) as e:
        raise FiguresError(f"{path}: not a gattanet figures file ({e}); remove it or write it anew with "
                           f"`gattanet-cli bench --plan --save`") from None
    return Figures(d["machine"], rates, path, d.get("saved")), None


def save_figures(path: str | Path, figures: Figures, engine: dict | None = None) -> None:
    """Write the figures (and, optionally, an engine benchmark's result) atomically."""
    payload = {"format": FIGURES_FORMAT, "version": FIGURES_VERSION, "saved": now_iso(),
               "machine": figures.machine, "figures": figures.rates}
    if engine is not None:
        payload["engine"] = engine
    write_json(path, payload)
    figures.path, figures.saved = Path(path), payload["saved"]


# ---------------------------------------------------------------- work and its time


@dataclass(frozen=True)
class Work:
    """`images` through `probe` (None: work that is not a model pass, not estimated) for one stage
    entry; `what` says what they are; `least`: the share of `images` that is certain (epochs that early
    stopping may cut make `images` an upper bound, `least` < 1); `sharded`: training steps that
    data-parallel processes share (a validation pass is not)."""
    stage: str
    entry: str | None
    what: str
    images: int
    probe: Probe | None = None
    least: float = 1.0
    sharded: bool = False

    @property
    def bound(self) -> bool:
        return self.least < 1

    @property
    def min_images(self) -> int:
        return round(self.images * self.least)

    @property
    def image_passes(self) -> int:
        return self.images * self.probe.passes if self.probe is not None else 0


def estimate_seconds(works: Iterable[Work], rate_of: Callable[[Probe], dict | None], processes: int = 1) -> list[dict]:
    """Each work item with its rate (`rate_of(probe)`'s record, or None: not measured) and seconds;
    `processes` > 1 divides the time of the sharded items by it (ideal data-parallel scaling)."""
    rows = []
    for w in works:
        record = rate_of(w.probe) if w.probe is not None else None
        rate = record.get("img_per_s") if record else None
        seconds = w.images / rate if rate else (0.0 if w.images == 0 and w.probe is not None else None)
        if seconds is not None and w.sharded and processes > 1:
            seconds /= processes
        least = seconds * w.least if seconds is not None else None
        rows.append({"stage": w.stage, "entry": w.entry, "what": w.what, "images": w.images,
                     "image_passes": w.image_passes, "bound": w.bound,
                     "processes": processes if w.sharded else 1,
                     "probe": w.probe.key if w.probe is not None else None,
                     "passes_per_image": w.probe.passes if w.probe is not None else None,
                     "batch": w.probe.batch if w.probe is not None else None,
                     "min_images": w.min_images, "img_per_s": rate, "seconds": seconds, "min_seconds": least,
                     "measured_batch": record.get("batch") if record else None,
                     "rate_source": record.get("source") if record else None,
                     "why_not": None if w.probe is None or rate else
                     (record or {}).get("error", "not measured")})
    return rows


def probes_of(works: Iterable[Work]) -> list[Probe]:
    """The distinct probes of `works`, in order of first use."""
    return list(dict.fromkeys(w.probe for w in works if w.probe is not None))

