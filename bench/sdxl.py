"""SDXL: the node against what it wraps, and against ComfyUI's own path.

(a) PF_SDXLOpenPose versus diffusers' SDXL ControlNet pipeline called directly, on the
same tiny random-weight files (tests/tiny_sdxl.py), with identical arguments; and the
node's cold run (first in the process: loads the single file) versus warm runs.

    python bench/sdxl.py [steps] [size] [repeats]

(b) A real-architecture SDXL (random fp16 weights built from local/sdxl_config/, written
as an LDM single file of ~6.9 GB under bench/out/), loaded and sampled by ComfyUI's own
checkpoint loader + KSampler and by PoseForge, each in its own process (so peak memory is
each side's own), one after the other in one run: load time, peak RSS, seconds per step.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/python python bench/sdxl.py real [size] [steps] [rounds]

(d) Two ControlNets (the pose's own and a PF_ControlNet entry) against diffusers' multi-ControlNet
pipeline over the same loaded modules and files: the cost per step (runs of n and 3n steps, so what a
run pays once drops out), interleaved, medians.

    python bench/sdxl.py multi [steps] [size] [repeats]

(c) The same file in core's graph (Load Checkpoint, KSampler) alone, and with PF_SDXLFromModel +
PF_SDXLText2Image added on the networks core loaded: the peak RSS it adds, as a share of the
checkpoint's size (the issue's bound: under 5 %).

    COMFYUI_DIR=/path/to/ComfyUI python bench/sdxl.py bridge [size] [steps]
"""
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tools"), os.path.join(ROOT, "tests")]

import torch  # noqa: E402
from doctor import load_pack, submodule  # noqa: E402


def pose_run(handle, size, steps):
    """(a pose-map IMAGE with one limb, PF_SDXLOpenPose's arguments) for the tiny benches."""
    pose = torch.zeros(1, size, size, 3)
    pose[0, size // 4:3 * size // 4, size // 2 - 2:size // 2 + 2, 0] = 1.0
    args = dict(prompt="a dancer", negative_prompt="blurry", width=size, height=size, num_inference_steps=steps,
                guidance_scale=6.0, scheduler="Euler", seed=3, samples=1, controlnet_scale=0.7,
                control_start=0.0, control_end=1.0, backend="local", sdxl=handle)
    return pose, args


def direct_pipeline(engine, ckpt, cn_dir):
    """diffusers' own SDXL ControlNet pipeline (Euler) on the same files, without PoseForge."""
    from diffusers import ControlNetModel, EulerDiscreteScheduler, StableDiffusionXLControlNetPipeline

    tok, tok2 = engine.tokenizers()
    pipe = StableDiffusionXLControlNetPipeline.from_single_file(
        ckpt, config=os.path.splitext(ckpt)[0] + ".config", local_files_only=True, tokenizer=tok, tokenizer_2=tok2,
        controlnet=ControlNetModel.from_pretrained(cn_dir), add_watermarker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main(steps=8, size=128, repeats=5):
    import tiny_sdxl

    root = tempfile.mkdtemp()
    _, ckpt, cn_dir = tiny_sdxl.save(root)
    pack = load_pack()
    submodule(pack, "host.models").set_models_root(root)
    engine = submodule(pack, "local.sdxl")
    handle = pack.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]().load(
        "tiny_sdxl.safetensors", "tiny-openpose-sdxl/diffusion_pytorch_model.safetensors", "fp32")[0]
    node = pack.NODE_CLASS_MAPPINGS["PF_SDXLOpenPose"]()
    pose, args = pose_run(handle, size, steps)

    t = time.perf_counter()
    node.generate(pose, **args)
    cold = time.perf_counter() - t

    from PIL import Image

    pipe = direct_pipeline(engine, ckpt, cn_dir)
    image = Image.fromarray((pose[0].numpy() * 255).astype("uint8"))

    def direct():
        return pipe(prompt="a dancer", negative_prompt="blurry", image=image, width=size, height=size,
                    num_inference_steps=steps, guidance_scale=6.0, controlnet_conditioning_scale=0.7,
                    generator=[torch.Generator("cpu").manual_seed(3)], output_type="np").images

    node_times, lib_times = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine state
        t = time.perf_counter()
        node.generate(pose, **args)
        node_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        direct()
        lib_times.append(time.perf_counter() - t)
    warm, lib = statistics.median(node_times), statistics.median(lib_times)
    print(f"tiny SDXL + ControlNet, {size}x{size}, {steps} steps, CPU threads {torch.get_num_threads()}, "
          f"median of {repeats}")
    print(f"node (warm)      {warm * 1000:.0f} ms")
    print(f"diffusers direct {lib * 1000:.0f} ms")
    print(f"node/pipeline    {warm / lib:.3f}")
    print(f"cold (first run, loads the files) {cold * 1000:.0f} ms, warm {warm * 1000:.0f} ms, "
          f"cold/warm {cold / warm:.1f}x")
    lora_costs(pack, root, handle, node, pose, args, repeats)


def lora_costs(pack, root, handle, node, pose, args, repeats):
    """A kohya LoRA (tests/tiny_lora.py) on the same runs: its cost per step (runs of n and 5n
    steps, so the per-run fusing drops out) and what fusing and restoring add to each run."""
    import tiny_lora
    import tiny_sdxl

    names = tiny_lora.save(root, tiny_sdxl.build())
    with_lora = pack.NODE_CLASS_MAPPINGS["PF_SDXLLoRA"]().apply(handle, names["kohya"], 1.0, 1.0)[0]
    steps = args["num_inference_steps"]

    def run(sdxl, n):
        t = time.perf_counter()
        node.generate(pose, **dict(args, sdxl=sdxl, num_inference_steps=n))
        return time.perf_counter() - t

    times = {key: [] for key in ("plain1", "plain2", "lora1", "lora2")}
    run(with_lora, steps)  # warm: the LoRA file read and cached
    for _ in range(repeats):  # interleaved, so both see the same machine state
        for key, sdxl in (("plain", handle), ("lora", with_lora)):
            times[key + "1"].append(run(sdxl, steps))
            times[key + "2"].append(run(sdxl, 5 * steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    plain_step, lora_step = ((med[k + "2"] - med[k + "1"]) / (4 * steps) for k in ("plain", "lora"))
    print(f"LoRA (kohya, rank {tiny_lora.RANK}, UNet + both text encoders) per step {lora_step * 1000:.1f} ms vs "
          f"{plain_step * 1000:.1f} ms without: ratio {lora_step / plain_step:.3f}")
    print(f"LoRA per run (load into peft, fuse, restore afterwards): "
          f"+{(med['lora1'] - med['plain1'] - steps * (lora_step - plain_step)) * 1000:.0f} ms")


# -- (b) real architecture, side by side with ComfyUI ----------------------------
REAL = os.path.join(ROOT, "bench", "out", "checkpoints", "sdxl_real_random_fp16.safetensors")


REAL_CN = os.path.join(ROOT, "bench", "out", "controlnet", "openpose_sdxl_real_random_fp16")


def _config(part):
    import json

    with open(os.path.join(ROOT, "local", "sdxl_config", part, "config.json")) as f:
        return json.load(f)


def _randomized(nets, device):
    """Give modules built empty (meta) random fp16 weights, drawn on `device` (a GPU draws
    billions of them in a moment), then held on the CPU: norms 1/0, the rest N(0, 0.02)."""
    gen = torch.Generator(device).manual_seed(0)
    for net in nets:
        net.to_empty(device=device)
        with torch.no_grad():
            for name, p in net.named_parameters():
                if p.ndim == 1 and "norm" in name:
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                else:
                    p.normal_(0.0, 0.02, generator=gen)
            for b in net.buffers():
                b.zero_()
        net.to("cpu")


def build_real(device="cpu"):
    """The real SDXL architecture with random fp16 weights, as an LDM single file."""
    if os.path.exists(REAL):
        return REAL
    import tiny_sdxl
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.set_default_dtype(torch.float16)  # build straight in fp16: 6.9 GB, not 14
    with init_empty_weights():
        parts = {"unet": UNet2DConditionModel.from_config(_config("unet")),
                 "vae": AutoencoderKL.from_config(_config("vae")),
                 "text_encoder": CLIPTextModel(CLIPTextConfig(**_config("text_encoder"))),
                 "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**_config("text_encoder_2")))}
    torch.set_default_dtype(torch.float32)
    _randomized(parts.values(), device)
    sd = {**tiny_sdxl.unet_to_ldm(parts["unet"]), **tiny_sdxl.vae_to_ldm(parts["vae"]),
          **tiny_sdxl.clip_l_to_ldm(parts["text_encoder"]), **tiny_sdxl.open_clip_to_ldm(parts["text_encoder_2"])}
    os.makedirs(os.path.dirname(REAL), exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, REAL + ".part")
    os.replace(REAL + ".part", REAL)
    return REAL


def build_real_controlnet(device="cpu"):
    """The SDXL OpenPose ControlNet architecture (OpenPoseXL2's, 2.5 GB) with random fp16
    weights, as a diffusers folder."""
    if os.path.exists(os.path.join(REAL_CN, "diffusion_pytorch_model.safetensors")):
        return REAL_CN
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel

    torch.set_default_dtype(torch.float16)
    with init_empty_weights():
        net = ControlNetModel.from_config(_config("controlnet"))
    torch.set_default_dtype(torch.float32)
    _randomized([net], device)
    net.save_pretrained(REAL_CN, safe_serialization=True)
    return REAL_CN


def side_comfyui(path, size, steps, then=None):
    sys.path.insert(0, os.environ["COMFYUI_DIR"])
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.sd
    import nodes

    t = time.perf_counter()
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)
    load = time.perf_counter() - t
    pos = nodes.CLIPTextEncode().encode(clip, "a dancer on a stage")[0]
    neg = nodes.CLIPTextEncode().encode(clip, "blurry")[0]
    latent = nodes.EmptyLatentImage().generate(size, size, 1)[0]
    times = {}
    for n in (1, steps):
        t = time.perf_counter()
        nodes.KSampler().sample(model, 3, n, 6.0, "euler", "normal", pos, neg, latent)
        times[n] = time.perf_counter() - t
    if then is not None:
        then(model, clip, vae)
    return load, times


def side_poseforge(path, size, steps):
    pack = load_pack()
    models = submodule(pack, "host.models")
    models.set_models_root(os.path.dirname(os.path.dirname(path)))  # bench/out: its checkpoints/ folder
    engine = submodule(pack, "local.sdxl")
    diffusers = submodule(pack, "local.libs").diffusers()  # imports before the clock, as ComfyUI's are
    import diffusers.loaders.single_file  # noqa: F401
    import transformers

    for lazy in ("StableDiffusionXLPipeline", "EulerDiscreteScheduler", "AutoencoderKL", "UNet2DConditionModel"):
        getattr(diffusers, lazy)
    for lazy in ("CLIPTokenizer", "CLIPTextModel", "CLIPTextModelWithProjection", "CLIPImageProcessor"):
        getattr(transformers, lazy)
    t = time.perf_counter()
    engine.checkpoint(path, "auto")["unet"]
    load = time.perf_counter() - t
    handle = {"ckpt": ("checkpoints", os.path.basename(path)), "controlnet": None, "dtype": "auto"}
    node = pack.NODE_CLASS_MAPPINGS["PF_SDXLText2Image"]()
    times = {}
    for n in (1, steps):
        t = time.perf_counter()
        node.generate(prompt="a dancer on a stage", negative_prompt="blurry", width=size, height=size,
                      num_inference_steps=n, guidance_scale=6.0, scheduler="Euler", seed=3, samples=1,
                      backend="local", sdxl=handle)
        times[n] = time.perf_counter() - t
    return load, times


def side_bridge(path, size, steps):
    """core's graph (load, KSampler), then PF_SDXLFromModel + PF_SDXLText2Image on the same loaded networks."""
    def bridge(model, clip, vae):
        pack = load_pack()
        bridged = pack.NODE_CLASS_MAPPINGS["PF_SDXLFromModel"]().load(model, clip, vae, "none")[0]
        pack.NODE_CLASS_MAPPINGS["PF_SDXLText2Image"]().generate(
            prompt="a dancer on a stage", negative_prompt="blurry", width=size, height=size, num_inference_steps=1,
            guidance_scale=6.0, scheduler="Euler", seed=3, samples=1, backend="local", sdxl=bridged)

    return side_comfyui(path, size, steps, then=bridge)


def main_bridge(size=512, steps=2):
    """Peak RSS of core's graph alone and with the bridge added (PoseForge's sampler on core's loaded
    networks), each in its own process: the difference as a share of the checkpoint's size."""
    import json
    import subprocess

    path = build_real()
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    peaks = {}
    for name in ("comfyui", "bridge"):
        _read_through(path)
        out = subprocess.run([python, os.path.abspath(__file__), "_side", name, path, str(size), str(steps)],
                             capture_output=True, text=True, env=dict(os.environ, POSEFORGE_MODELS=""))
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if not line:
            sys.exit(f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        peaks[name] = json.loads(line[0][7:])["peak_gib"]
    size_gib = os.path.getsize(path) / 2 ** 30
    print(f"real-architecture SDXL ({size_gib:.2f} GiB file), {size}x{size}: peak RSS core graph "
          f"{peaks['comfyui']:.2f} GiB, with the bridge {peaks['bridge']:.2f} GiB: "
          f"+{(peaks['bridge'] - peaks['comfyui']) / size_gib:.3f} x the checkpoint's size")


def side(name, path, size, steps):
    import json
    import resource

    sides = {"comfyui": side_comfyui, "poseforge": side_poseforge, "bridge": side_bridge}
    load, times = sides[name](path, size, steps)
    print("RESULT " + json.dumps({"load_s": load, "step_s": (times[steps] - times[1]) / (steps - 1),
                                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}))


def _read_through(path):
    with open(path, "rb") as f:
        while f.read(64 * 2 ** 20):
            pass


def main_real(size=512, steps=3, rounds=2):
    """Both sides `rounds` times, the order swapped each round (this VM's memory makes whichever
    process runs first after a big one slower); each round printed, then the ratio of the medians
    (one fast or slow outlier on this VM moves a best-of ratio by half)."""
    import json
    import subprocess

    path = build_real()
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    results = {"comfyui": [], "poseforge": []}
    for r in range(rounds):
        for name in (("comfyui", "poseforge") if r % 2 == 0 else ("poseforge", "comfyui")):
            _read_through(path)  # the file in the page cache for each side alike
            out = subprocess.run([python, os.path.abspath(__file__), "_side", name, path, str(size), str(steps)],
                                 capture_output=True, text=True, env=dict(os.environ, POSEFORGE_MODELS=""))
            line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
            if not line:
                sys.exit(f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
            results[name].append(json.loads(line[0][7:]))
    print(f"real-architecture SDXL (random fp16 weights, {os.path.getsize(path) / 2 ** 30:.2f} GiB file), "
          f"{size}x{size}, Euler, CFG 6, CPU threads {torch.get_num_threads()}, {rounds} rounds")
    width = 8 * rounds
    print(f"{'':12s}{'ComfyUI':>{width}s}{'PoseForge':>{width}s}{'ratio per round':>{width}s}{'ratio (medians)':>17s}")
    for key, label in (("load_s", "load (s)"), ("peak_gib", "peak (GiB)"), ("step_s", "s/step")):
        c, p = ([r[key] for r in results[n]] for n in ("comfyui", "poseforge"))
        each = lambda xs: " / ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        print(f"{label:12s}{each(c):>{width}s}{each(p):>{width}s}{each([b / a for a, b in zip(c, p)]):>{width}s}"
              f"{statistics.median(p) / statistics.median(c):17.2f}")


def main_multi(steps=4, size=256, repeats=5):
    import tiny_sdxl
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLControlNetPipeline
    from PIL import Image

    root = tempfile.mkdtemp()
    built, ckpt, _ = tiny_sdxl.save(root)
    tiny_sdxl.save_controlnets(root, built)
    pack = load_pack()
    submodule(pack, "host.models").set_models_root(root)
    engine, models = submodule(pack, "local.sdxl"), submodule(pack, "host.models")
    pose_cn, depth_cn = "tiny-openpose-sdxl/diffusion_pytorch_model.safetensors", "tiny-depth-sdxl"
    handle = pack.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]().load("tiny_sdxl.safetensors", pose_cn, "fp32")[0]
    node = pack.NODE_CLASS_MAPPINGS["PF_SDXLOpenPose"]()
    pose, args = pose_run(handle, size, steps)
    depth = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(1))
    args["control"] = pack.NODE_CLASS_MAPPINGS["PF_ControlNet"]().add(depth_cn + "/diffusion_pytorch_model.safetensors",
                                                                     depth, "auto", 0.6, 0.0, 1.0)[0]
    node.generate(pose, **dict(args, num_inference_steps=1))  # loads and caches every network

    parts = {n: r.net for n, r in engine.checkpoint(ckpt, "fp32").items()}
    nets = [engine.controlnet(models.find("controlnet", name), "fp32").net for name in (pose_cn, depth_cn)]
    tok, tok2 = engine.tokenizers()
    config = engine.component_config(ckpt, "scheduler", "scheduler_config.json")
    pipe = StableDiffusionXLControlNetPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], text_encoder_2=parts["text_encoder_2"], tokenizer=tok,
        tokenizer_2=tok2, unet=parts["unet"], controlnet=nets, scheduler=EulerDiscreteScheduler.from_config(config),
        add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    images = [Image.fromarray((x[0].numpy() * 255).astype("uint8")) for x in (pose, depth)]

    def ours(n):
        node.generate(pose, **dict(args, num_inference_steps=n))

    def theirs(n):
        pipe(prompt="a dancer", negative_prompt="blurry", image=images, width=size, height=size,
             num_inference_steps=n, guidance_scale=6.0, controlnet_conditioning_scale=[0.7, 0.6],
             generator=[torch.Generator("cpu").manual_seed(3)], output_type="np")

    per_step = {"ours": [], "theirs": []}
    sides = [("ours", ours), ("theirs", theirs)]
    for index in range(repeats):  # interleaved, first one side then the other, so both see the same machine state
        for name, run in sides[::1 if index % 2 else -1]:
            took = []
            for n in (steps, 3 * steps):
                t = time.perf_counter()
                run(n)
                took.append(time.perf_counter() - t)
            per_step[name].append((took[1] - took[0]) / (2 * steps))
    a, b = (statistics.median(per_step[k]) for k in ("ours", "theirs"))
    print(f"two ControlNets (tiny SDXL), {size}x{size}, Euler, CFG 6, CPU threads {torch.get_num_threads()}, "
          f"median of {repeats} (runs of {steps} and {3 * steps} steps)")
    print(f"PoseForge (pose + PF_ControlNet)        {a * 1000:.1f} ms/step")
    print(f"diffusers' multi-ControlNet pipeline   {b * 1000:.1f} ms/step")
    print(f"ours/diffusers per step                {a / b:.3f} (per round "
          f"{' / '.join(f'{x / y:.2f}' for x, y in zip(per_step['ours'], per_step['theirs']))})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["multi"]:
        main_multi(*(int(a) for a in sys.argv[2:5]))
    elif sys.argv[1:2] == ["real"]:
        main_real(*(int(a) for a in sys.argv[2:5]))
    elif sys.argv[1:2] == ["bridge"]:
        main_bridge(*(int(a) for a in sys.argv[2:4]))
    elif sys.argv[1:2] == ["_side"]:
        side(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main(*(int(a) for a in sys.argv[1:4]))
