"""The one scheduler table: every name the samplers offer, what it means in ComfyUI, the diffusers
scheduler (and options) that implements it locally, and whether Segmind takes it.

Segmind's twelve names come first (a graph means the same on both backends); the others are the
sampler/scheduler pairs ComfyUI users pick every day, local only. The widget, the local mapping,
the README table and the Segmind check all read this table.
"""
from . import libs

# name: (Segmind takes it, ComfyUI sampler / scheduler, diffusers class, scheduler options, pipeline call options)
TABLE = {
    "DDIM": (True, "ddim / ddim_uniform", "DDIMScheduler", {}, {}),
    "DPM Multi": (True, "dpmpp_2m / normal", "DPMSolverMultistepScheduler",
                  {"algorithm_type": "dpmsolver++", "solver_order": 2}, {}),
    "DPM Single": (True, "(no exact ComfyUI pair: DPM-Solver++ 2S, singlestep, not ancestral)",
                   "DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, {}),
    "Euler a": (True, "euler_ancestral / normal", "EulerAncestralDiscreteScheduler", {}, {}),
    "Euler": (True, "euler / normal", "EulerDiscreteScheduler", {}, {}),
    "Heun": (True, "heun / normal", "HeunDiscreteScheduler", {}, {}),
    "DPM2 a Karras": (True, "dpm_2_ancestral / karras", "KDPM2AncestralDiscreteScheduler",
                      {"use_karras_sigmas": True}, {}),
    "DPM2 Karras": (True, "dpm_2 / karras", "KDPM2DiscreteScheduler", {"use_karras_sigmas": True}, {}),
    "LMS": (True, "lms / normal", "LMSDiscreteScheduler", {}, {}),
    "PNDM": (True, "(no ComfyUI sampler: PLMS)", "PNDMScheduler", {}, {}),
    "DDPM": (True, "ddpm / normal", "DDPMScheduler", {}, {}),
    "UniPC": (True, "uni_pc / normal", "UniPCMultistepScheduler", {}, {}),
    "DPM++ 2M": (False, "dpmpp_2m / normal", "DPMSolverMultistepScheduler",
                 {"algorithm_type": "dpmsolver++", "solver_order": 2}, {}),
    "DPM++ 2M Karras": (False, "dpmpp_2m / karras", "DPMSolverMultistepScheduler",
                        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}, {}),
    "DPM++ 2M SDE Karras": (False, "dpmpp_2m_sde / karras", "DPMSolverMultistepScheduler",
                            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}, {}),
    "DPM++ SDE Karras": (False, "dpmpp_sde / karras", "DPMSolverSDEScheduler", {"use_karras_sigmas": True}, {}),
    "Euler Karras": (False, "euler / karras", "EulerDiscreteScheduler", {"use_karras_sigmas": True}, {}),
    "LCM": (False, "lcm / sgm_uniform (LCM, Lightning, Hyper and DMD2 LoRAs)", "LCMScheduler", {}, {}),
    "TCD": (False, "TCD of the ComfyUI-TCD pack (not in core ComfyUI), gamma 0.3", "TCDScheduler", {},
            {"eta": 0.3}),
}
NAMES = list(TABLE)
PREDICTIONS = ("auto", "eps", "v_prediction", "v_prediction_zsnr")  # as ComfyUI's ModelSamplingDiscrete names them
SEGMIND = [name for name, row in TABLE.items() if row[0]]


class SchedulerError(ValueError):
    pass


def check(name):
    if name not in TABLE:
        raise SchedulerError(f"Unknown scheduler {name!r}; choose one of {', '.join(NAMES)}.")


def segmind_problem(name):
    """Why Segmind cannot run `name`, or None."""
    if name in SEGMIND:
        return None
    return f"the scheduler {name!r} is local only; Segmind takes {', '.join(SEGMIND)}"


def predicting(config, prediction):
    """A checkpoint's scheduler config dict set to sample as `prediction` says (PREDICTIONS but auto): eps,
    v_prediction, or v_prediction_zsnr (zero terminal SNR: the betas rescaled so the last timestep is pure
    noise, timesteps from the trailing end, as ComfyUI samples a zsnr model)."""
    config = dict(config, prediction_type="epsilon" if prediction == "eps" else "v_prediction")
    config.pop("rescale_betas_zero_snr", None)  # off unless zsnr (and unknown to the schedulers that cannot)
    if prediction == "v_prediction_zsnr":
        config.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return config


def _takes_zsnr(cls_name):
    import inspect

    return "rescale_betas_zero_snr" in inspect.signature(getattr(libs.diffusers(), cls_name).__init__).parameters


def build(name, config):
    """(the diffusers scheduler for `name` built from a checkpoint's scheduler config dict, the
    extra pipeline-call arguments it needs)."""
    check(name)
    _, _, cls_name, options, call = TABLE[name]
    if config.get("rescale_betas_zero_snr") and not _takes_zsnr(cls_name):
        usable = [n for n, row in TABLE.items() if _takes_zsnr(row[2])]
        raise SchedulerError(f"This checkpoint is sampled with zero terminal SNR (zsnr), which diffusers' {name!r} "
                             f"scheduler cannot do: choose one of {', '.join(usable)}.")
    return getattr(libs.diffusers(), cls_name).from_config(config, **options), dict(call)


def partial(steps, denoise):
    """(the schedule's length, the pipeline's `strength`) that run `steps` steps at `denoise` as core's
    KSampler does: a schedule of int(steps / denoise) steps of which the last `steps` run (diffusers'
    img2img pipelines keep int(length x strength) of it)."""
    if denoise >= 1.0:
        return steps, 1.0
    length = max(steps, int(steps / denoise))
    return length, min(1.0, (steps + 0.5) / length)


def evaluations(name, config, steps, denoise=1.0):
    """UNet evaluations (the pipeline's step callbacks) `steps` steps of `name` take at `denoise`: its
    timesteps. The second-order samplers (Heun, DPM2, DPM2 a, DPM++ SDE) evaluate twice a step but the
    last, 2 x steps - 1; PNDM once more than steps. 0 at denoise 0 (nothing is sampled)."""
    if denoise <= 0.0:
        return 0
    scheduler, _ = build(name, config)
    length, strength = partial(steps, denoise)
    scheduler.set_timesteps(length)
    start = length - min(int(length * strength), length)
    return len(scheduler.timesteps[start * scheduler.order:])


def order(name):
    """UNet evaluations a step of `name` costs (1 or 2), for the README's table."""
    return getattr(libs.diffusers(), TABLE[name][2]).order
