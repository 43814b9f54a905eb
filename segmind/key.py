"""The Segmind API key: from the environment or a key file, never from a graph.

Lookup order:
1. the `SEGMIND_API_KEY` environment variable;
2. the file named by `SEGMIND_API_KEY_FILE`;
3. `~/.config/poseforge/segmind_api_key` (or `$XDG_CONFIG_HOME/poseforge/...`).

The key is never a node input, so it cannot reach a saved workflow, PNG
metadata or a `ui` output; `redact` and the log filter keep it out of
messages and log records.
"""
import logging
import os

ENV = "SEGMIND_API_KEY"
FILE_ENV = "SEGMIND_API_KEY_FILE"

HOW_TO_SET = (
    f"Set the {ENV} environment variable before starting ComfyUI, or put the key alone "
    f"in a file named by {FILE_ENV} (default: ~/.config/poseforge/segmind_api_key). "
    "Get a key at https://www.segmind.com (Console > API keys). Never type it into a node."
)


def default_key_file():
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "poseforge", "segmind_api_key")


def api_key():
    """The key, or None when none is set."""
    value = os.environ.get(ENV, "").strip()
    if value:
        return value
    path = os.environ.get(FILE_ENV) or default_key_file()
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError:
        return None
    return value or None


def redact(text):
    """`text` with the current key (if any) replaced by a placeholder."""
    key = api_key()
    text = str(text)
    return text.replace(key, "[SEGMIND_API_KEY]") if key else text


class RedactKey(logging.Filter):
    """A log filter that removes the key from every record it passes."""

    def filter(self, record):
        if api_key():
            record.msg = redact(record.getMessage())
            record.args = ()
        return True
