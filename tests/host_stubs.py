"""What the real host (ComfyUI 0.3.64, tests/conftest.py `comfy_host`) cannot show: the
command-line flags of later ComfyUI versions. Everything else is tested against the real
ComfyUI modules; out-of-memory is raised by the tests' own networks."""
import types


def cli_args(**flags):
    """A `comfy.cli_args` module whose `args` carry the flags of a later ComfyUI: `--offline` and
    `--disable-partner-nodes` (0.3.64 has only `--disable-api-nodes`)."""
    mod = types.ModuleType("comfy.cli_args")
    mod.args = types.SimpleNamespace(offline=False, disable_partner_nodes=False, disable_api_nodes=False)
    for name, value in flags.items():
        setattr(mod.args, name, value)
    return mod
