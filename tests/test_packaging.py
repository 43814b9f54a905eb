"""Install metadata, README commands and import cost stay true to the code."""
import os
import re
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "diffusers", "transformers", "controlnet_aux", "facexlib", "spandrel",
         "timm", "cv2", "requests", "numpy")


def _read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def test_pyproject_matches_requirements():
    meta = tomllib.loads(_read("pyproject.toml"))
    reqs = [l.strip() for l in _read("requirements.txt").splitlines() if l.strip() and not l.startswith("#")]
    assert meta["project"]["dependencies"] == reqs
    assert meta["project"]["urls"]["Repository"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["project"]["version"])
    comfy = meta["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["requires-comfyui"]
    assert comfy["requires-comfyui"] == ">=0.3.64"  # the ComfyUI the integration test runs


def _names(filename):
    return [re.split(r"[<>=!~\[; ]", l.strip())[0].lower() for l in _read(filename).splitlines()
            if l.strip() and not l.startswith("#")]


def test_requirements_never_touch_a_users_torch_or_opencv():
    runtime = _names("requirements.txt")
    assert not {"torch", "torchvision", "torchaudio"} & set(runtime)  # ComfyUI provides them
    assert not [n for n in runtime if n.startswith("opencv")]  # the libraries bring their own cv2
    assert set(_names("requirements-standalone.txt")) == {"torch", "torchvision"}
    for line in _read("requirements.txt").splitlines():  # a == pin needs its reason on the line above
        assert "==" not in line or line.startswith("#"), line


def test_installed_set_is_consistent():
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_readme_has_the_two_commands_ci_runs():
    readme = _read("README.md")
    for marker in ("<!-- setup -->", "<!-- test -->"):
        assert readme.count(marker) == 1
    out = subprocess.check_output(
        ["bash", "-c", "source <(sed -n '/^block()/p' .ci/run); block setup; echo ---; block test"],
        cwd=ROOT, text=True)
    setup, test = out.split("---\n")
    assert "-r requirements-standalone.txt -r requirements.txt" in setup and "pytest" in test


def test_pack_import_pulls_in_no_heavy_library():
    code = ("import sys; sys.path.insert(0, %r); from doctor import load_pack; load_pack(); "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in %r)))"
            % (os.path.join(ROOT, "tools"), HEAVY))
    pulled = subprocess.check_output([sys.executable, "-c", code], text=True).split()
    assert pulled == []


def test_web_scripts_parse():
    """Every script under web/ is valid ES module syntax (node --check), as the editor loads it."""
    import glob
    import shutil
    import tempfile

    node = shutil.which("node")
    scripts = glob.glob(os.path.join(ROOT, "web", "**", "*.js"), recursive=True)
    assert scripts
    if node is None:
        import pytest

        pytest.skip("node is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        for script in scripts:
            module = os.path.join(tmp, os.path.basename(script)[:-3] + ".mjs")  # checked as an ES module
            shutil.copy(script, module)
            out = subprocess.run([node, "--check", module], capture_output=True, text=True)
            assert out.returncode == 0, f"{script}: {out.stderr}"


def test_readme_scheduler_table_is_the_scheduler_table():
    """The README's table is derived from local/schedulers.py: every row, in order, with its class."""
    from conftest import pf

    table = pf("local.schedulers").TABLE
    readme = _read("README.md")
    rows = [line for line in readme[readme.index("| name | ComfyUI sampler / scheduler |"):].splitlines()[2:]
            if line.startswith("| `")]
    rows = rows[:len(table)]
    assert [r.split("`")[1] for r in rows] == list(table)
    for row, (name, (segmind, comfy, cls, _, _)) in zip(rows, table.items()):
        assert comfy in row and f"`{cls}`" in row, row
        assert row.endswith(f"| {pf('local.schedulers').order(name)} | " + ("yes |" if segmind else "local only |")), row


def test_diffusers_is_capped_at_a_release_the_tests_ran_on():
    """We call diffusers' internals (requirements.txt says which): the cap admits the installed release
    (the one this suite runs on) and nothing newer than the next minor."""
    import diffusers
    from packaging.requirements import Requirement

    line = next(l for l in _read("requirements.txt").splitlines() if l.startswith("diffusers"))
    spec = Requirement(line).specifier
    assert any(s.operator == "<" for s in spec) and spec.contains(diffusers.__version__), line


def _imports(path, module):
    """The pack's modules that `module` (dotted, e.g. 'local.sdxl') imports anywhere in its file, deferred
    imports inside functions included."""
    import ast

    package = module.split(".")[:-1] if not path.endswith("__init__.py") else module.split(".")
    found = set()
    for node in ast.walk(ast.parse(_read(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1] if node.level > 1 else package
            target = [p for p in base if p] + (node.module.split(".") if node.module else [])
            names = [a.name for a in node.names]
            for name in names if not node.module else [None] + names:
                found.add(".".join(target + ([name] if name else [])))
    return found


def test_no_import_circle_in_the_pack():
    """Every module of the pack, deferred imports included: the graph of who imports whom has no cycle."""
    modules = {}
    for folder in ("host", "local", "engines", "nodes", "segmind"):
        for name in os.listdir(os.path.join(ROOT, folder)):
            if name.endswith(".py"):
                dotted = f"{folder}.{name[:-3]}" if name != "__init__.py" else folder
                modules[dotted] = os.path.join(folder, name)
    graph = {m: {i for i in _imports(path, m) if i in modules and i != m} for m, path in modules.items()}

    def cycle_from(start, here, seen):
        for nxt in graph[here]:
            if nxt == start:
                return seen + [nxt]
            if nxt not in seen:
                found = cycle_from(start, nxt, seen + [nxt])
                if found:
                    return found
        return None

    circles = [c for m in graph if (c := cycle_from(m, m, [m]))]
    assert circles == [], circles[0]
