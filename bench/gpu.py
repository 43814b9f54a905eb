"""SDXL + OpenPose ControlNet on a GPU: PoseForge's node, ComfyUI's own nodes and diffusers'
pipeline on the same real-architecture files, side by side; then the same under the VRAM cap
of an 8 GB card.

The files are built here (random fp16 weights in the real architectures, drawn on the GPU: no
downloads): the SDXL single file of bench/sdxl.py real and an OpenPoseXL2-shaped ControlNet.
Each side runs in its own process (its own peak memory), fp16, 1024 x 1024, Euler, CFG 6,
ControlNet strength 0.8, one pose map:

- PoseForge: PF_SDXLLoader + PF_SDXLOpenPose (outside ComfyUI, as a script user runs it);
- ComfyUI (when COMFYUI_DIR is set): CheckpointLoaderSimple's loader, ControlNetLoader's,
  CLIPTextEncode, ControlNetApplyAdvanced, KSampler, VAEDecode;
- diffusers: StableDiffusionXLControlNetPipeline on the same files.

Figures: load (file -> RAM, ready to sample), seconds per step ((t30 - t1) / 29 of warm runs),
peak VRAM (torch.cuda.max_memory_allocated), end to end (load + the first 30-step run,
prompt to decoded image). The 8 GB cap is torch.cuda.set_per_process_memory_fraction, with
ComfyUI also told by --reserve-vram, and diffusers' pipeline using its model CPU offload.

    python bench/gpu.py [--size 1024] [--steps 30]      (CUDA; about 5 minutes on one GPU)
    python bench/gpu.py --dry-run                      (the tiny test models on the CPU, 64 px,
                                                        3 steps: that every side runs)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(ROOT, "tools"), os.path.join(ROOT, "tests")]
CAP_GIB = 8
PROMPT, NEGATIVE = "a dancer on a stage, studio light", "blurry"


def pose_image(size):
    """A pose-map-like picture (coloured limbs on black), HxWx3 uint8."""
    import numpy as np

    img = np.zeros((size, size, 3), np.uint8)
    s = size // 16
    for (x0, y0, x1, y1), colour in (((8, 3, 8, 7), (0, 0, 255)), ((8, 7, 5, 11), (255, 0, 0)),
                                     ((8, 7, 11, 11), (0, 255, 0)), ((8, 11, 6, 15), (255, 255, 0)),
                                     ((8, 11, 10, 15), (0, 255, 255))):
        for k in range(64):
            x, y = x0 + (x1 - x0) * k / 63, y0 + (y1 - y0) * k / 63
            img[int(y * s) - s // 4:int(y * s) + s // 4 + 1, int(x * s) - s // 4:int(x * s) + s // 4 + 1] = colour
    return img


# -- the sides (each in its own process) ---------------------------------------------
def side_poseforge(cfg, torch):
    from doctor import load_pack, submodule

    pack = load_pack()
    submodule(pack, "host.models").set_models_root(cfg["root"])
    engine = submodule(pack, "local.sdxl")
    residency = submodule(pack, "host.residency")
    if cfg["dry_run"] and cfg["cap"]:  # no cap on the CPU: tell the residency code the card is small
        residency.free_memory = lambda dev: 2 ** 20
    diffusers = submodule(pack, "local.libs").diffusers()  # imports before the clock, as the other sides'
    import accelerate  # noqa: F401
    import diffusers.loaders.single_file_utils  # noqa: F401
    import transformers

    for lazy in ("StableDiffusionXLControlNetPipeline", "ControlNetModel", "AutoencoderKL", "UNet2DConditionModel"):
        getattr(diffusers, lazy)
    for lazy in ("CLIPTextModel", "CLIPTextModelWithProjection"):
        getattr(transformers, lazy)
    loader = pack.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]()
    node = pack.NODE_CLASS_MAPPINGS["PF_SDXLOpenPose"]()
    pose = torch.from_numpy(pose_image(cfg["size"])).float().div(255)[None]
    dtype = "fp32" if cfg["dry_run"] else "fp16"

    def load():
        handle = loader.load(cfg["ckpt_name"], cfg["cn_name"], dtype)[0]
        models = submodule(pack, "host.models")
        engine.checkpoint(models.find(*handle["ckpt"]), dtype)
        engine.controlnet(models.find("controlnet", handle["controlnet"]), dtype)
        return handle

    def run(handle, steps):
        node.generate(pose, prompt=PROMPT, negative_prompt=NEGATIVE, width=cfg["size"], height=cfg["size"],
                      num_inference_steps=steps, guidance_scale=6.0, scheduler="Euler", seed=3, samples=1,
                      controlnet_scale=0.8, control_start=0.0, control_end=1.0, backend="local", sdxl=handle)

    return load, run


def side_comfyui(cfg, torch):
    sys.path.insert(0, os.environ["COMFYUI_DIR"])
    argv = [sys.argv[0]]
    if cfg["cap"]:
        total = torch.cuda.get_device_properties(0).total_memory
        argv += ["--reserve-vram", f"{max(0.0, total / 2 ** 30 - CAP_GIB):.2f}"]
    sys.argv = argv
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.controlnet
    import comfy.sd
    import nodes

    image = torch.from_numpy(pose_image(cfg["size"])).float().div(255)[None]

    def load():
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(cfg["ckpt"], output_vae=True, output_clip=True)
        return model, clip, vae, comfy.controlnet.load_controlnet(cfg["cn_file"])

    def run(loaded, steps):
        model, clip, vae, cn = loaded
        pos = nodes.CLIPTextEncode().encode(clip, PROMPT)[0]
        neg = nodes.CLIPTextEncode().encode(clip, NEGATIVE)[0]
        pos, neg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, cn, image, 0.8, 0.0, 1.0)[:2]
        latent = nodes.EmptyLatentImage().generate(cfg["size"], cfg["size"], 1)[0]
        samples = nodes.KSampler().sample(model, 3, steps, 6.0, "euler", "normal", pos, neg, latent)[0]
        nodes.VAEDecode().decode(vae, samples)

    return load, run


def side_diffusers(cfg, torch):
    import logging

    from doctor import load_pack, submodule

    engine = submodule(load_pack(), "local.sdxl")
    from diffusers import ControlNetModel, EulerDiscreteScheduler, StableDiffusionXLControlNetPipeline
    from PIL import Image

    dtype = torch.float32 if cfg["dry_run"] else torch.float16
    dev = "cpu" if cfg["dry_run"] else "cuda"
    image = Image.fromarray(pose_image(cfg["size"]))

    def load():
        tok, tok2 = engine.tokenizers()
        pipe = StableDiffusionXLControlNetPipeline.from_single_file(
            cfg["ckpt"], config=engine.config_dir(cfg["ckpt"]), local_files_only=True, torch_dtype=dtype,
            tokenizer=tok, tokenizer_2=tok2, add_watermarker=False,
            controlnet=ControlNetModel.from_pretrained(cfg["cn_dir"], torch_dtype=dtype))
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        if cfg["cap"] and dev == "cuda":
            pipe.enable_model_cpu_offload()  # diffusers' own answer to a small card
            logging.getLogger().info("loaded partially: model CPU offload")
        return pipe

    def run(pipe, steps):
        if pipe.device.type != dev and not (cfg["cap"] and dev == "cuda"):
            pipe.to(dev)
        pipe(prompt=PROMPT, negative_prompt=NEGATIVE, image=image, width=cfg["size"], height=cfg["size"],
             num_inference_steps=steps, guidance_scale=6.0, controlnet_conditioning_scale=0.8,
             generator=torch.Generator("cpu").manual_seed(3), output_type="np")

    return load, run


SIDES = {"PoseForge": side_poseforge, "ComfyUI": side_comfyui, "diffusers": side_diffusers}


def side(name, cfg):
    """One side's figures, printed as a RESULT line for the parent."""
    import logging

    import torch

    cuda = torch.cuda.is_available() and not cfg["dry_run"]
    if cuda and cfg["cap"]:
        torch.cuda.set_per_process_memory_fraction(CAP_GIB * 2 ** 30 / torch.cuda.get_device_properties(0).total_memory)
    notes = []

    class Plans(logging.Handler):  # what each side's log says it did on a small card
        def emit(self, record):
            text = record.getMessage()
            for said, note in (("streamed from RAM", "UNet + ControlNet streamed"), ("decode tiled", "VAE tiled"),
                               ("loaded partially", "loaded partially"), ("tiled VAE", "VAE tiled")):
                if said in text:
                    notes.append(note)

    logging.getLogger().addHandler(Plans())
    logging.getLogger().setLevel(logging.INFO)
    load, run = SIDES[name](cfg, torch)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t = time.perf_counter()
    loaded = load()
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    run(loaded, cfg["steps"])  # the first run: moves the weights onto the GPU
    sync()
    first = time.perf_counter() - t
    times = {}
    for n in (1, cfg["steps"]):
        t = time.perf_counter()
        run(loaded, n)
        sync()
        times[n] = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else float("nan")
    print("RESULT " + json.dumps({"load_s": load_s, "step_s": (times[cfg["steps"]] - times[1]) / (cfg["steps"] - 1),
                                  "peak_vram_gib": peak, "end_to_end_s": load_s + first,
                                  "plan": "; ".join(dict.fromkeys(notes)) or "whole"}))


# -- the parent: files, sides, one table -------------------------------------------------
def files(dry_run):
    """{ckpt, ckpt_name, cn_dir, cn_file, cn_name, root} of the files every side loads."""
    if dry_run:
        import tiny_sdxl

        root = tempfile.mkdtemp(prefix="pf-gpu-dry-")
        _, ckpt, cn_dir = tiny_sdxl.save(root)
    else:
        import torch
        from sdxl import build_real, build_real_controlnet

        device = "cuda" if torch.cuda.is_available() else "cpu"
        ckpt, cn_dir = build_real(device), build_real_controlnet(device)
        root = os.path.dirname(os.path.dirname(ckpt))
    cn_file = os.path.join(cn_dir, "diffusion_pytorch_model.safetensors")
    return {"root": root, "ckpt": ckpt, "ckpt_name": os.path.basename(ckpt), "cn_dir": cn_dir, "cn_file": cn_file,
            "cn_name": os.path.relpath(cn_file, os.path.join(root, "controlnet"))}


def table(rows, cfg):
    head = f"{'side':10s} {'VRAM cap':>9s} {'load s':>7s} {'s/step':>7s} {'peak VRAM GiB':>14s} {'end-to-end s':>13s}  plan"
    lines = [head, "-" * len(head)]
    for (name, cap), r in rows:
        if "error" in r:
            lines.append(f"{name:10s} {cap:>9s}  {r['error']}")
            continue
        lines.append(f"{name:10s} {cap:>9s} {r['load_s']:7.2f} {r['step_s']:7.3f} {r['peak_vram_gib']:14.2f} "
                     f"{r['end_to_end_s']:13.2f}  {r['plan']}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the tiny test models on the CPU")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs CUDA (or --dry-run)")
    cfg = dict(files(args.dry_run), dry_run=args.dry_run, size=args.size or (64 if args.dry_run else 1024),
               steps=args.steps or (3 if args.dry_run else 30))
    names = ["PoseForge", "diffusers"] + (["ComfyUI"] if os.environ.get("COMFYUI_DIR") and not args.dry_run else [])
    rows = []
    for cap in (False, True):
        for name in names:
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "_side", name, json.dumps(dict(cfg, cap=cap))],
                                 capture_output=True, text=True, env=dict(os.environ, POSEFORGE_MODELS=""))
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            result = json.loads(line[0][7:]) if line else {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:160]}
            rows.append(((name, f"{CAP_GIB} GiB" if cap else "none"), result))
    device = "CPU (dry run)" if args.dry_run else torch.cuda.get_device_name(0)
    print(f"SDXL + OpenPose ControlNet, {cfg['size']}x{cfg['size']}, {cfg['steps']} steps, Euler, CFG 6, "
          f"{'fp32' if args.dry_run else 'fp16'}, {device}, {time.strftime('%Y-%m-%d')}")
    if not os.environ.get("COMFYUI_DIR") or args.dry_run:
        print("(ComfyUI's side: " + ("not in a dry run: its loader needs the real architecture)" if args.dry_run
                                     else "set COMFYUI_DIR to add it)"))
    print(table(rows, cfg))
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["_side"]:
        side(sys.argv[2], json.loads(sys.argv[3]))
    else:
        main()
