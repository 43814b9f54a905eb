"""PF_SDXLOpenPose versus diffusers' SDXL ControlNet pipeline called directly, on the same
tiny random-weight files (tests/tiny_sdxl.py), with identical arguments; and the node's
cold run (first in the process: loads the single file) versus warm runs.

    python bench/sdxl.py [steps] [size] [repeats]

The real-architecture side by side with ComfyUI's loader and KSampler (6.9 GB of weights)
is not part of this script yet.
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
    pose = torch.zeros(1, size, size, 3)
    pose[0, size // 4:3 * size // 4, size // 2 - 2:size // 2 + 2, 0] = 1.0
    args = dict(prompt="a dancer", negative_prompt="blurry", width=size, height=size, num_inference_steps=steps,
                guidance_scale=6.0, scheduler="Euler", seed=3, samples=1, controlnet_scale=0.7,
                control_start=0.0, control_end=1.0, backend="local", sdxl=handle)

    t = time.perf_counter()
    node.generate(pose, **args)
    cold = time.perf_counter() - t

    from diffusers import ControlNetModel, EulerDiscreteScheduler, StableDiffusionXLControlNetPipeline
    from PIL import Image

    tok, tok2 = engine.tokenizers()
    pipe = StableDiffusionXLControlNetPipeline.from_single_file(
        ckpt, config=os.path.splitext(ckpt)[0] + ".config", local_files_only=True, tokenizer=tok, tokenizer_2=tok2,
        controlnet=ControlNetModel.from_pretrained(cn_dir), add_watermarker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
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


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
