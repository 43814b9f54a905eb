"""The Segmind endpoint table (data in endpoints.json) and parameter validation.

Parameters are checked here, before any request is sent: unknown names,
missing required fields, wrong types, out-of-range values and unknown enum
choices each raise ParamError naming the field.
"""
import json
import math
import os

BUILTIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "endpoints.json")
OVERRIDE_ENVS = ("SEGMIND_ENDPOINTS_FILE", "POSEFORGE_SEGMIND_ENDPOINTS")  # the first one set is used


class ParamError(ValueError):
    pass


class EndpointsFileError(ValueError):
    """The user's endpoint file cannot be used; `reason` says why without naming the file."""

    def __init__(self, env, path, reason):
        self.reason = f"the file named by {env} cannot be used: {reason}"
        super().__init__(f"The Segmind endpoint file {path} (named by {env}) cannot be used: {reason}. Fix it, or "
                         f"unset {env} to use PoseForge's own table.")


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _override():
    """{endpoint: entry} of the user's override file, {} when none is named."""
    env = next((name for name in OVERRIDE_ENVS if os.environ.get(name)), None)
    if env is None:
        return {}
    path = os.environ[env]
    try:
        found = _load(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise EndpointsFileError(env, path, f"{type(exc).__name__}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise EndpointsFileError(env, path, f"it is not valid JSON ({exc})") from None
    entries = [e for k, e in found.items() if not k.startswith("_")] if isinstance(found, dict) else None
    if entries is None or not all(isinstance(e, dict) and isinstance(e.get("params", {}), dict) and
                                  all(p is None or isinstance(p, dict) for p in e.get("params", {}).values())
                                  for e in entries):
        raise EndpointsFileError(env, path, 'it must be a JSON object of {"endpoint": {"params": {...}, ...}}')
    return found


def table():
    """The built-in table with the user's override file (if any) merged over it."""
    data = {k: v for k, v in _load(BUILTIN).items() if not k.startswith("_")}
    for name, entry in _override().items():
        if name.startswith("_"):
            continue
        merged = dict(data.get(name, {}), **{k: v for k, v in entry.items() if k != "params"})
        params = dict(data.get(name, {}).get("params", {}))
        for pname, spec in entry.get("params", {}).items():
            params[pname] = None if spec is None else dict(params.get(pname, {}), **spec)
        merged["params"] = {k: v for k, v in params.items() if v is not None}
        data[name] = merged
    return data


def price_list():
    """{"as_of", "source"} of the prices in the table, and per endpoint its cost per call in US$ (None
    when Segmind publishes none), typical seconds and whether its fields are confirmed."""
    return {"as_of": _load(BUILTIN)["_prices"]["as_of"], "source": _load(BUILTIN)["_prices"]["source"],
            "endpoints": {name: {"cost_usd": e.get("cost_usd"), "typical_seconds": e.get("typical_seconds"),
                                 "confirmed": bool(e.get("confirmed", False))} for name, e in table().items()}}


def endpoint(name):
    entries = table()
    if name not in entries:
        raise ParamError(f"No Segmind endpoint named {name!r} in the table; known: {', '.join(entries)}")
    return entries[name]


def _check(name, spec, value):
    kind = spec.get("type", "str")
    if kind == "image":
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ParamError(f"{name} must be true or false, not {value!r}")
        return value
    if kind == "enum":
        if value not in spec["choices"]:
            raise ParamError(f"{name} must be one of {', '.join(spec['choices'])}; got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ParamError(f"{name} must be text, not {type(value).__name__}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError(f"{name} must be a number, not {value!r}")
    if kind == "int":
        if value != int(value):
            raise ParamError(f"{name} must be a whole number, not {value!r}")
        value = int(value)
    elif not math.isfinite(value):
        raise ParamError(f"{name} must be a finite number, not {value!r}")
    lo, hi = spec.get("min"), spec.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ParamError(f"{name}={value} is outside Segmind's range {lo}..{hi}")
    return value


def build_body(name, params):
    """(slug, body, image fields) for endpoint `name` from OUR parameter names.
    Values of None are left out (Segmind's default applies)."""
    entry = endpoint(name)
    specs = entry["params"]
    unknown = sorted(set(params) - set(specs))
    if unknown:
        raise ParamError(f"Segmind endpoint {name!r} has no parameter(s) {', '.join(unknown)}")
    body, images = {}, []
    for pname, spec in specs.items():
        value = params.get(pname)
        if value is None:
            if spec.get("required"):
                raise ParamError(f"Segmind endpoint {name!r} needs {pname}")
            continue
        field = spec.get("field", pname)
        body[field] = _check(pname, spec, value)
        if spec.get("type") == "image":
            images.append(field)
    return entry["slug"], body, images
