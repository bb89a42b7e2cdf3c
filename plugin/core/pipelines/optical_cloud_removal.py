"""Optical-only cloud removal: Diffusion Enhancement (DE) sampling in numpy + onnxruntime.

No torch here. Two ONNX models work together (cards in ``models/zoo/``):

- the reference model E (task ``optical_cloud_removal_reference``): ``cloudy`` -> ``restored``;
- the per-step graph (task ``optical_cloud_removal_diffusion_step``):
  ``(x_t, t, cloudy, reference) -> (eps, weight)``; ``t`` is a float32 (B,) tensor of
  timestep indices in [0, T). Its card's ``extra`` holds the schedule (``T``, ``beta_start``,
  ``beta_end``, ``eta``).

One DE step at timestep t (paper eqs. 9-15)::

    x0_eps = clip((x_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t), -1, 1)
    x0_t   = (1 - W) * x0_eps + W * x0_E,      W = clip(weight, eta, 1)   (inference only)

then the DDIM update (``eta_ddim`` = 0: deterministic) or the DDPM posterior step, both on a
respaced timestep sequence. The final output is x0_t of the last step.

Start of the trajectory: with no ``t_start`` (the paper, and step models whose card has no
``extra.t_start``) the sampler starts from pure noise x_T = noise[0] and walks ``steps`` timesteps
evenly spaced over [0, T-1]. With ``t_start`` = t0 (card ``extra.t_start``) it starts from the
partially noised reference, x_t0 = sqrt(abar_t0) * x0_E + sqrt(1 - abar_t0) * noise[0], and walks
``steps`` timesteps evenly spaced over [0, t0] (the CNP was trained on t <= t0 only). Either way
W = 1 everywhere (eta = 1) returns x0_E exactly.

Samples: with ``samples`` = K > 1 the processor runs K trajectories from independent start noise
and returns their mean. Each trajectory is a draw of x0 given the cloudy image; their mean is a
lower-error estimate (the noise the draws disagree on averages out), so at a fixed number of step
calls, a few short trajectories can beat one long one. The card's ``extra.samples_default`` and
``extra.steps_default`` hold the split chosen on the validation pairs
(``models/diffusion/select_sampler.py``).

On CUDA (``iobinding="auto"`` and the step session runs on ``CUDAExecutionProvider``) the per-tile
constants ``cloudy`` and ``reference`` are uploaded to the device once per tile batch and bound with
IOBinding; x_t and t are bound from host memory each step and eps/weight come back to host memory,
because the update itself is numpy. (Keeping x_t on the device would need the update in a graph too.)

Both tile processors follow the engine contract ``processor(inputs, origins) -> outputs`` with
the *reference* model's card (input ``cloudy``, output ``restored``, network units [-1, 1]).
Noise for each tile comes from ``numpy.random.default_rng([seed, row, col])`` (tile origin in the
output grid; sample k > 0 appends k), so the same input gives the same output whatever the batching.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..runtime import static_tile

T_DEFAULT = 1000
BETA_START = 1e-4
BETA_END = 0.02
ETA_DEFAULT = 0.3
SAMPLERS = ("ddim", "ddpm")


# ---------------------------------------------------------------------------------------
# schedule


def linear_betas(T: int = T_DEFAULT, beta_start: float = BETA_START, beta_end: float = BETA_END) -> np.ndarray:
    """The linear beta schedule of DDPM (float64, shape (T,))."""
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def alphas_cumprod(T: int = T_DEFAULT, beta_start: float = BETA_START, beta_end: float = BETA_END) -> np.ndarray:
    """abar_t = prod_{s<=t} (1 - beta_s), t = 0..T-1 (float64)."""
    return np.cumprod(1.0 - linear_betas(T, beta_start, beta_end))


def respaced_timesteps(T: int, steps: int) -> np.ndarray:
    """``steps`` timesteps in ascending order, evenly spaced over [0, T-1], both ends included."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in [1, {T}], got {steps}")
    if steps == 1:
        return np.array([T - 1], dtype=np.int64)
    ts = np.round(np.linspace(0, T - 1, steps)).astype(np.int64)
    if len(np.unique(ts)) != steps:  # cannot happen for steps <= T, kept as a guard
        raise ValueError("respacing produced duplicate timesteps")
    return ts


def sampling_timesteps(T: int, steps: int, t_start: Optional[int] = None) -> np.ndarray:
    """The timesteps the sampler visits, in descending order: ``steps`` evenly spaced over
    [0, T-1] (``t_start`` None) or over [0, t_start]. ValueError naming the bad one."""
    if t_start is not None and not 0 <= int(t_start) < T:
        raise ValueError(f"t_start must be in [0, {T - 1}], got {t_start}")
    problem = steps_problem(steps, T, t_start)
    if problem:
        raise ValueError(problem)
    return respaced_timesteps(T if t_start is None else int(t_start) + 1, steps)[::-1]


def start_state(x0_ref: np.ndarray, noise0: np.ndarray, abar: np.ndarray, t_start: Optional[int]) -> np.ndarray:
    """x at the first visited timestep: noise0 itself (full trajectory) or q(x0_E, t_start)."""
    if t_start is None:
        return np.asarray(noise0, dtype=np.float32)
    a = float(abar[int(t_start)])
    return (np.sqrt(a) * x0_ref.astype(np.float64) + np.sqrt(1.0 - a) * noise0).astype(np.float32)


def clamp_weight(w: np.ndarray, eta: float) -> np.ndarray:
    """Inference-time clamp of the WA output to [eta, 1]."""
    return np.clip(w, eta, 1.0)


def de_x0(x_t: np.ndarray, eps: np.ndarray, weight: np.ndarray, x0_ref: np.ndarray, abar_t,
          eta: Optional[float] = ETA_DEFAULT) -> np.ndarray:
    """x0_t of one DE step (float64 math, float32 result). ``abar_t`` is a scalar or (B,) array.
    ``eta=None`` skips the clamp (training-time behaviour)."""
    a = np.asarray(abar_t, dtype=np.float64).reshape(-1, *([1] * (x_t.ndim - 1)))
    x0_eps = np.clip((x_t - np.sqrt(1.0 - a) * eps) / np.sqrt(a), -1.0, 1.0)
    w = weight if eta is None else clamp_weight(weight, eta)
    return ((1.0 - w) * x0_eps + w * x0_ref).astype(np.float32)


def ddim_update(x_t: np.ndarray, x0: np.ndarray, abar_t: float, abar_prev: float,
                noise: Optional[np.ndarray], eta_ddim: float = 0.0) -> np.ndarray:
    """DDIM (Song et al. eq. 12) from x_t to x_prev given the predicted x0."""
    eps = (x_t - np.sqrt(abar_t) * x0) / np.sqrt(1.0 - abar_t)
    sigma = eta_ddim * np.sqrt((1.0 - abar_prev) / (1.0 - abar_t)) * np.sqrt(1.0 - abar_t / abar_prev)
    out = np.sqrt(abar_prev) * x0 + np.sqrt(max(1.0 - abar_prev - sigma ** 2, 0.0)) * eps
    if sigma > 0 and noise is not None:
        out = out + sigma * noise
    return out.astype(np.float32)


def ddpm_update(x_t: np.ndarray, x0: np.ndarray, abar_t: float, abar_prev: float,
                noise: Optional[np.ndarray]) -> np.ndarray:
    """DDPM posterior q(x_prev | x_t, x0) on a (possibly respaced) sequence: mean + std * noise."""
    beta = 1.0 - abar_t / abar_prev
    coef_x0 = np.sqrt(abar_prev) * beta / (1.0 - abar_t)
    coef_xt = np.sqrt(1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar_t)
    var = beta * (1.0 - abar_prev) / (1.0 - abar_t)
    out = coef_x0 * x0 + coef_xt * x_t
    if var > 0 and noise is not None:
        out = out + np.sqrt(var) * noise
    return out.astype(np.float32)


StepFn = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


def sample(step_fn: StepFn, x0_ref: np.ndarray, noise: Sequence[np.ndarray], steps: int = 10,
           eta: float = ETA_DEFAULT, sampler: str = "ddim", eta_ddim: float = 0.0,
           T: int = T_DEFAULT, beta_start: float = BETA_START, beta_end: float = BETA_END,
           return_weights: bool = False, t_start: Optional[int] = None):
    """Run the DE sampling loop.

    ``step_fn(x_t, t)`` -> (eps, weight), ``t`` a float32 (B,) array of timestep indices
    (the conditioning y and x0_E are bound inside step_fn). ``noise[0]`` is x_T (or, with
    ``t_start``, the noise of q(x0_E, t_start)); ``noise[i]`` (i = 1..steps) is the noise of the
    i-th update (unused by deterministic DDIM and by the last step, and then never read, so a lazy
    ``TileNoise`` never draws it). Returns x0_t of the last step (and the mean W per step if asked).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    abar = alphas_cumprod(T, beta_start, beta_end)
    ts = sampling_timesteps(T, steps, t_start)
    x = start_state(x0_ref, noise[0], abar, t_start)
    x0 = x
    weights = []
    for i, t in enumerate(ts):
        prev = abar[ts[i + 1]] if i + 1 < len(ts) else 1.0
        eps, w = step_fn(x, np.full((x.shape[0],), float(t), dtype=np.float32))
        x0 = de_x0(x, eps, w, x0_ref, abar[t], eta)
        weights.append(float(np.clip(w, eta, 1.0).mean()) if eta is not None else float(w.mean()))
        if i + 1 == len(ts):
            break  # the last update lands on abar = 1, i.e. returns x0_t
        stochastic = sampler == "ddpm" or eta_ddim > 0
        z = noise[i + 1] if stochastic and i + 1 < len(noise) else None
        if sampler == "ddim":
            x = ddim_update(x, x0, abar[t], prev, z, eta_ddim)
        else:
            x = ddpm_update(x, x0, abar[t], prev, z)
    return (x0, weights) if return_weights else x0


def _tile_rng(seed: int, origin: Tuple[int, int], sample: int = 0) -> np.random.Generator:
    key = [int(seed) & 0xFFFFFFFF, int(origin[0]), int(origin[1])] + ([int(sample)] if sample else [])
    return np.random.default_rng(key)


def tile_noise(seed: int, origin: Tuple[int, int], shape: Tuple[int, ...], count: int,
               sample: int = 0) -> List[np.ndarray]:
    """``count`` standard-normal float32 arrays of ``shape`` for the tile at ``origin`` (trajectory
    ``sample``)."""
    rng = _tile_rng(seed, origin, sample)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]


class TileNoise:
    """The noise of a batch of tiles, ``noise[i]`` of shape (B, *shape), drawn when first read.

    Equals ``np.stack`` of ``tile_noise`` per tile, draw for draw, but holds one draw at a
    time: DDIM reads only ``noise[0]``, DDPM reads them in order. Reading out of order is
    refused (the random streams only go forward)."""

    def __init__(self, seed: int, origins: Sequence[Tuple[int, int]], shape: Tuple[int, ...], count: int,
                 sample: int = 0):
        self._rngs = [_tile_rng(seed, o, sample) for o in origins]
        self._shape = (len(self._rngs),) + tuple(shape)
        self._count = int(count)
        self._next = 0            # index of the next draw
        self._last: Optional[np.ndarray] = None
        self.draws = 0            # how many draws were made (for tests and diagnostics)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self._count:
            raise IndexError(f"noise index {i} out of range [0, {self._count})")
        if i == self._next - 1:
            return self._last
        if i < self._next:
            raise IndexError(f"noise {i} was already passed (next is {self._next}); read in order")
        while self._next <= i:
            batch = np.empty(self._shape, np.float32)
            for k, rng in enumerate(self._rngs):
                batch[k] = rng.standard_normal(self._shape[1:])
            self._next += 1
            self.draws += 1
        self._last = batch
        return batch


# ---------------------------------------------------------------------------------------
# tile processors (engine contract)


def _single_input(session) -> str:
    return session.get_inputs()[0].name


class ReferenceProcessor:
    """Reference model E alone ("reference" mode): cloudy -> restored."""

    def __init__(self, reference_session):
        self.session = reference_session
        self.static_tile = static_tile(reference_session)
        self.input_name = _single_input(reference_session)
        self.output_name = reference_session.get_outputs()[0].name

    def __call__(self, inputs: Dict[str, np.ndarray], origins: List[Tuple[int, int]]) -> Dict[str, np.ndarray]:
        y = np.ascontiguousarray(inputs[self.input_name], dtype=np.float32)
        return {self.output_name: self.session.run([self.output_name], {self.input_name: y})[0]}


class DiffusionProcessor:
    """E, then the DE sampling loop with the per-step graph. Output name = E's output.

    ``schedule`` (T, beta_start, beta_end) is read from the step model's card ``extra`` when
    ``schedule`` is None and the session carries a card; else the DDPM defaults.
    ``eta`` None = the card's ``extra.eta`` (chosen on validation pairs at export), else 0.3.
    ``t_start`` "card" = the card's ``extra.t_start`` (absent: full trajectory from pure noise);
    None forces the full trajectory; an int starts from q(x0_E, t_start).
    ``samples`` trajectories are averaged; the step graph runs ``steps * samples`` times per tile
    (``default_steps``/``default_samples`` read the card's validated values, as the job does).
    """

    def __init__(self, reference_session, step_session, steps: int = 10, eta: Optional[float] = None,
                 seed: int = 0, sampler: str = "ddim", eta_ddim: float = 0.0,
                 schedule: Optional[Dict[str, float]] = None, iobinding="auto",
                 on_step: Optional[Callable[[int, int], None]] = None, t_start="card",
                 samples: int = 1):
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if eta is None:
            eta = default_eta(step_session)
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if int(samples) < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        self.samples = int(samples)
        self.reference = ReferenceProcessor(reference_session)
        self.step_session = step_session
        self.static_tile = self.reference.static_tile or static_tile(step_session)
        self.steps, self.eta, self.seed, self.sampler, self.eta_ddim = int(steps), float(eta), int(seed), sampler, eta_ddim
        self.schedule = dict(schedule or _schedule_from_session(step_session))
        T = int(self.schedule["T"])
        self.t_start = default_t_start(step_session) if isinstance(t_start, str) and t_start == "card" else (
            None if t_start is None else int(t_start))
        sampling_timesteps(T, self.steps, self.t_start)  # validates steps and t_start early
        self.last_weights: List[float] = []
        # called as on_step(i, steps * samples) before each step call: reports progress, and may raise to cancel
        self.on_step = on_step
        # set by the engine before each batch: report_within_batch(fraction of this batch done)
        self.report_within_batch: Optional[Callable[[float], None]] = None
        providers = list(step_session.get_providers()) if hasattr(step_session, "get_providers") else []
        if iobinding == "auto":
            iobinding = bool(providers) and providers[0] == "CUDAExecutionProvider"
        self.iobinding = bool(iobinding)
        self.device = "cuda" if providers and providers[0] == "CUDAExecutionProvider" else "cpu"

    def _step_fn(self, y: np.ndarray, x0_ref: np.ndarray) -> StepFn:
        if self.iobinding:
            import onnxruntime as ort
            y_dev = ort.OrtValue.ortvalue_from_numpy(y, self.device, 0)
            ref_dev = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x0_ref), self.device, 0)

            def bound_step(x_t, t):
                binding = self.step_session.io_binding()
                binding.bind_ortvalue_input("cloudy", y_dev)
                binding.bind_ortvalue_input("reference", ref_dev)
                binding.bind_cpu_input("x_t", np.ascontiguousarray(x_t, dtype=np.float32))
                binding.bind_cpu_input("t", t)
                binding.bind_output("eps", "cpu")
                binding.bind_output("weight", "cpu")
                self.step_session.run_with_iobinding(binding)
                eps, weight = binding.copy_outputs_to_cpu()
                return eps, weight
            return bound_step

        def step(x_t, t):
            eps, weight = self.step_session.run(
                ["eps", "weight"], {"x_t": x_t, "t": t, "cloudy": y, "reference": x0_ref})
            return eps, weight
        return step

    def __call__(self, inputs: Dict[str, np.ndarray], origins: List[Tuple[int, int]]) -> Dict[str, np.ndarray]:
        out_name = self.reference.output_name
        y = np.ascontiguousarray(inputs[self.reference.input_name], dtype=np.float32)
        x0_ref = self.reference({self.reference.input_name: y}, origins)[out_name].astype(np.float32)
        step = self._observed(self._step_fn(y, x0_ref))
        total, weights = None, []
        for k in range(self.samples):
            noise = TileNoise(self.seed, origins, y.shape[1:], self.steps + 1, sample=k)
            x0, w = sample(step, x0_ref, noise, self.steps, self.eta, self.sampler,
                           self.eta_ddim, int(self.schedule["T"]), float(self.schedule["beta_start"]),
                           float(self.schedule["beta_end"]), return_weights=True, t_start=self.t_start)
            total = x0.astype(np.float64) if total is None else total + x0
            weights.append(w)
        self.last_weights = list(np.mean(weights, axis=0))
        return {out_name: (total / self.samples).astype(np.float32)}

    def _observed(self, step: StepFn) -> StepFn:
        if self.on_step is None and self.report_within_batch is None:
            return step
        n = self.steps * self.samples
        calls = iter(range(n))

        def observed(x_t, t):
            i = next(calls, n - 1)
            if self.on_step is not None:
                self.on_step(i, n)
            out = step(x_t, t)
            if self.report_within_batch is not None:
                self.report_within_batch((i + 1) / n)
            return out
        return observed


def _card_extra(session) -> dict:
    """The ``extra`` block of the card embedded in an ONNX session ({} without a card)."""
    import json
    try:
        meta = session.get_modelmeta().custom_metadata_map
        return dict(json.loads(meta["skyclear.card"]).get("extra", {}))
    except Exception:
        return {}


def _schedule_from_session(session) -> Dict[str, float]:
    extra = _card_extra(session)
    try:
        return {"T": int(extra["T"]), "beta_start": float(extra["beta_start"]), "beta_end": float(extra["beta_end"])}
    except (KeyError, TypeError, ValueError):
        return {"T": T_DEFAULT, "beta_start": BETA_START, "beta_end": BETA_END}


def default_eta(step_session) -> float:
    """The eta stored in the step model's card (``extra.eta``), else 0.3."""
    try:
        return float(_card_extra(step_session)["eta"])
    except (KeyError, TypeError, ValueError):
        return ETA_DEFAULT


def steps_problem(steps: int, T: int, t_start: Optional[int]) -> Optional[str]:
    """None when a trajectory can take ``steps`` steps (at most one per timestep from its start
    down to 0), else the message, naming STEPS."""
    limit, why = (T, f"it has {T} timesteps") if t_start is None else (
        int(t_start) + 1, f"it samples from t = {t_start} down to 0")
    if 1 <= int(steps) <= limit:
        return None
    return f"STEPS: steps must be between 1 and {limit} for this step model ({why}), got {steps}"


def card_steps_problem(extra: dict, steps: int) -> Optional[str]:
    """``steps_problem`` for a step model known by its card's ``extra`` block (no session needed)."""
    t_start = extra.get("t_start")
    return steps_problem(steps, int(extra.get("T", T_DEFAULT)), None if t_start is None else int(t_start))


def default_t_start(step_session) -> Optional[int]:
    """The truncated start t0 stored in the step model's card (``extra.t_start``), else None
    (full trajectory from pure noise, as for step models exported before t_start existed)."""
    value = _card_extra(step_session).get("t_start")
    return None if value is None else int(value)


def default_steps(step_session, fallback: int = 10) -> int:
    """The step count stored in the step model's card (``extra.steps_default``)."""
    try:
        return int(_card_extra(step_session)["steps_default"])
    except (KeyError, TypeError, ValueError):
        return fallback


def steps_and_samples(text: str) -> Tuple[int, int]:
    """``"10"`` -> (10, 1), ``"2x5"`` -> (2 steps, 5 averaged samples): how benchmarks and the
    sampler selection name a run shape."""
    steps, _, samples = str(text).lower().partition("x")
    try:
        shape = int(steps), int(samples or 1)
    except ValueError:
        shape = (0, 0)
    if min(shape) < 1:
        raise ValueError(f"expected STEPS or STEPSxSAMPLES, both at least 1 (e.g. 10 or 2x5), got {text!r}")
    return shape


def default_samples(step_session) -> int:
    """The number of averaged trajectories stored in the step model's card (``extra.samples_default``),
    else 1 (step models exported before samples existed)."""
    try:
        return max(1, int(_card_extra(step_session)["samples_default"]))
    except (KeyError, TypeError, ValueError):
        return 1
