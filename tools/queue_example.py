"""Run an example workflow on a ComfyUI server in API mode (standard library only).

    python tools/queue_example.py ipadapter_xl_openpose [--url http://127.0.0.1:8188] [--out outputs/]

Posts example_workflows/api/<name>.json to POST /prompt, waits on GET /history/<id>,
downloads every saved image through GET /view and prints each node's `ui` output
(`backend`, Segmind's cost, `openpose_json`). Exit status 1 when ComfyUI reports an error.
"""
import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def call(url, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def queue(url, graph, workflow=None):
    """POST /prompt; returns the prompt id. `workflow` (the UI graph) is embedded in saved PNGs."""
    body = {"prompt": graph, "client_id": "poseforge-example"}
    if workflow is not None:
        body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
    try:
        queued = call(url + "/prompt", body)
    except urllib.error.HTTPError as err:  # ComfyUI answers 400 with what is wrong in the graph
        raise RuntimeError(err.read().decode("utf-8", "replace")) from err
    if queued.get("node_errors"):
        raise RuntimeError(json.dumps(queued["node_errors"], indent=2))
    return queued["prompt_id"]


def wait(url, prompt_id, timeout=3600):
    """The finished history entry of `prompt_id` ({"outputs", "status"})."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        entry = call(f"{url}/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        time.sleep(0.5)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")


def local_name(name):
    """A file name the server gave, if it is a plain name to write inside the output folder."""
    if (not isinstance(name, str) or not name or name != os.path.basename(name) or name.startswith(".")
            or "/" in name or "\\" in name or "\0" in name or ":" in name):
        raise ValueError(f"the server named an output file {name!r} that is not a plain file name; not written")
    return name


def download(url, outputs, folder):
    """Fetch every image the outputs name into `folder`; returns the paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for output in outputs.values():
        for image in output.get("images", []):
            query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
            path = os.path.join(folder, local_name(image["filename"]))
            with urllib.request.urlopen(f"{url}/view?{query}", timeout=60) as response, open(path, "wb") as f:
                f.write(response.read())
            paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="an example in example_workflows/api/, without .json")
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--out", default="outputs")
    args = parser.parse_args(argv)
    try:
        with open(os.path.join(ROOT, "example_workflows", "api", local_name(args.name) + ".json"),
                  encoding="utf-8") as f:
            graph = json.load(f)
    except (OSError, ValueError) as exc:
        names = sorted(n[:-5] for n in os.listdir(os.path.join(ROOT, "example_workflows", "api")))
        print(f"No example {args.name!r} ({exc}); the examples are: {', '.join(names)}", file=sys.stderr)
        return 2
    try:
        return run(args, graph)
    except urllib.error.HTTPError as exc:
        print(f"ComfyUI answered HTTP {exc.code} to {exc.url}.", file=sys.stderr)
        return 1
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"No ComfyUI answered at {args.url} ({reason}). Start it (python main.py --listen 127.0.0.1 "
              "--port 8188) or give its address with --url.", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as exc:
        print(f"ComfyUI refused or failed the graph: {exc}", file=sys.stderr)
        return 1


def run(args, graph):
    entry = wait(args.url, queue(args.url, graph))
    if entry["status"].get("status_str") != "success":
        print(json.dumps(entry["status"], indent=2), file=sys.stderr)
        return 1
    for node_id, output in entry["outputs"].items():
        title = graph.get(node_id, {}).get("_meta", {}).get("title", f"node {node_id}")
        for key, value in output.items():
            if key == "openpose_json":
                people = [len(frame["people"]) for frame in json.loads(value[0])]
                print(f"{title}: openpose_json, people per image {people}")
            elif key != "images":
                print(f"{title}: {key} = {value}")
    for path in download(args.url, entry["outputs"], args.out):
        print("saved", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
