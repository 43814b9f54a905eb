"""Concurrency of the Segmind client against the fake server with a fixed latency.

Prints, in one run, the wall time of: one request; samples=4 (four requests);
an 8-image CodeFormer batch; and the ratios to one request.

    python bench/segmind_concurrency.py [latency_seconds]
"""
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tools"), os.path.join(ROOT, "tests")]

import torch  # noqa: E402
from doctor import load_pack, submodule  # noqa: E402
from fake_segmind import FakeSegmind  # noqa: E402

KEY = "SG_bench0000000000"


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(latency):
    pack = load_pack()
    client_mod = submodule(pack, "segmind.client")
    fake = FakeSegmind(keys=(KEY,), credits=1e9).start()
    fake.latency = latency
    client = client_mod.Client(base_url=fake.base_url, api_key=KEY)
    job = {"prompt": "bench", "width": 512, "height": 512}
    photo = torch.rand(1, 256, 256, 3)
    try:
        client.run("sdxl1.0-txt2img", [job])  # warm the connection path
        one = timed(lambda: client.run("sdxl1.0-txt2img", [job]))
        four = timed(lambda: client.run("sdxl1.0-txt2img", [dict(job, seed=s) for s in range(4)]))
        eight = timed(lambda: client.run("codeformer", [{"image": photo}] * 8))
    finally:
        fake.stop()
    print(f"fake server latency {latency:.2f} s, pool of {client.max_workers}")
    print(f"1 request        {one:.3f} s")
    print(f"samples=4        {four:.3f} s  ratio {four / one:.2f}x")
    print(f"8-image batch    {eight:.3f} s  ratio {eight / one:.2f}x (two waves of 4)")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 0.5)
