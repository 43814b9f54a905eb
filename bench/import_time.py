"""What importing the pack adds to a ComfyUI start-up.

Each run is a fresh interpreter that has already imported torch (as ComfyUI
has), then loads the pack the way ComfyUI does. Prints the median added time
over several runs and the third-party modules the pack pulled in.

    python bench/import_time.py [runs]
"""
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("diffusers", "transformers", "controlnet_aux", "facexlib", "spandrel", "spandrel_extra_arches",
         "timm", "cv2", "scipy", "skimage", "matplotlib", "requests")

PROBE = r"""
import json, sys, time
import torch
sys.path.insert(0, TOOLS)
before = set(sys.modules)
t = time.perf_counter()
from doctor import load_pack
load_pack()
took = time.perf_counter() - t
stdlib = set(sys.stdlib_module_names)
new = sorted({m.split(".")[0] for m in set(sys.modules) - before} - stdlib - {"doctor"})
new = [m for m in new if not m.startswith("/") and "_x_" not in m]
print(json.dumps({"seconds": took, "third_party": new}))
"""


def measure(runs=7):
    code = f"TOOLS = {os.path.join(ROOT, 'tools')!r}\n" + PROBE
    results = [json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
               for _ in range(runs)]
    return statistics.median(r["seconds"] for r in results), results[-1]["third_party"]


if __name__ == "__main__":
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    median, modules = measure(runs)
    heavy = [m for m in modules if m in HEAVY]
    print(f"pack import on top of torch: median {median * 1000:.1f} ms over {runs} runs")
    print("third-party modules pulled in:", ", ".join(modules) or "none")
    print("heavy libraries pulled in:", ", ".join(heavy) or "none")
