"""The Segmind API key: from the environment or a key file, never from a graph.

Lookup order:
1. the `SEGMIND_API_KEY` environment variable;
2. the file named by `SEGMIND_API_KEY_FILE`;
3. `~/.config/poseforge/segmind_api_key` (or `$XDG_CONFIG_HOME/poseforge/...`).

The key is never a node input, so it cannot reach a saved workflow, PNG
metadata or a `ui` output; `redact` and the log filter keep it out of
messages and log records. A key with whitespace or control characters inside
it (a key file with a second line) is refused by `checked`, in words that do
not contain it.
"""
import logging
import os

ENV = "SEGMIND_API_KEY"
FILE_ENV = "SEGMIND_API_KEY_FILE"
PLACEHOLDER = "[SEGMIND_API_KEY]"

HOW_TO_SET = (
    f"Set the {ENV} environment variable before starting ComfyUI, or put the key alone "
    f"in a file named by {FILE_ENV} (default: ~/.config/poseforge/segmind_api_key). "
    "Get a key at https://www.segmind.com (Console > API keys). Never type it into a node."
)


class KeyFormatError(ValueError):
    pass


def default_key_file():
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "poseforge", "segmind_api_key")


def _lookup():
    """(key or None, where it came from, why a key file that is there cannot be used or None)."""
    value = os.environ.get(ENV, "").strip()
    if value:
        return value, f"the {ENV} environment variable", None
    path = os.environ.get(FILE_ENV) or default_key_file()
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read(4096).strip()  # a key is short: a huge file is not read whole
    except FileNotFoundError:
        return None, path, None
    except (OSError, UnicodeDecodeError) as exc:  # there, but unreadable: not the same as no key
        return None, path, f"The Segmind key file {path} cannot be read ({type(exc).__name__}: {exc})."
    return value or None, f"the key file {path}", None if value else f"The Segmind key file {path} is empty."


def api_key():
    """The key, or None when none is set (or its file cannot be read: `problem()` says why)."""
    return _lookup()[0]


def problem():
    """Why no key can be used although a key file is there (unreadable, empty), or None."""
    value, _, why = _lookup()
    return None if value else why


def missing_message():
    """What to tell a user when no key can be used."""
    return (problem() or "No Segmind API key is set.") + " " + HOW_TO_SET


def checked(value, where=None):
    """`value` if it can be sent as the x-api-key header; KeyFormatError (without the key) otherwise."""
    where = where or _lookup()[1]
    if any(c.isspace() or not c.isprintable() or not c.isascii() for c in value):
        raise KeyFormatError(f"The Segmind key in {where} contains whitespace, a line break or other characters "
                             "a key cannot have: it must be the key alone, on one line. Nothing was sent.")
    return value


def redact(text, secret=None):
    """`text` with `secret` (default: the current key) replaced by a placeholder. Redact before
    cutting a text short, so no part of the key survives at the cut."""
    secret = secret or api_key()
    text = str(text)
    return text.replace(secret, PLACEHOLDER) if secret else text


class RedactKey(logging.Filter):
    """A log filter that removes the key from every record it passes."""

    def filter(self, record):
        if api_key():
            record.msg = redact(record.getMessage())
            record.args = ()
        return True
