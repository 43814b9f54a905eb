"""Prompts as ComfyUI reads them: what its CLIPTextEncode makes of a text on an SDXL checkpoint.

- Weights: `(text:1.3)` gives text the weight 1.3; `(text)` multiplies the weight by 1.1, and
  nested parentheses multiply again (`((text))` = 1.21); an explicit `:w` replaces the weight it
  is nested in; `\\(` and `\\)` are literal parentheses.
- Length: the text is cut into chunks of 75 tokens (77 with the start and end tokens, padded);
  a weighted segment shorter than 8 tokens moves whole into the next chunk rather than being
  split. The chunks' hidden states are concatenated along the sequence; the pooled output is the
  first chunk's.
- Weighting: a token of weight w is `empty + w * (token - empty)`, where `empty` is the encoding
  of the empty prompt at the same position; nothing changes when every weight is 1.
- SDXL: CLIP-L and OpenCLIP bigG hidden states of the penultimate layer (no final layer norm),
  side by side (768 + 1280 = 2048 wide); CLIP-L pads with its end token, bigG with "!" (0); the
  pooled output is bigG's projected one.
- A positive and a negative of different lengths are repeated to their least common multiple
  (repeating a condition does not change attention over it) when that is at most 4x the shorter,
  as ComfyUI batches them; past that ComfyUI runs the two apart, which we get by padding the
  shorter to the longer and masking the padding out of the cross-attention (`same_length`).
- Bounds: a prompt of more than MAX_CHUNKS chunks (2,400 tokens) or MAX_CHARS characters is
  refused before it is encoded.
Textual inversions (`embedding:name`) are not loaded: the name is left out, with a warning, as
ComfyUI does for an embedding it cannot find.
"""
import contextlib
import logging
import math
import re

from ..host import device as host_device

log = logging.getLogger("PoseForge")
CHUNK = 77
GROUP = 8  # a weighted segment of at least this many tokens may be split across chunks
EMBEDDING = "embedding:"
MAX_CHUNKS = 32  # 2,400 tokens; CLIP was trained on 75
MAX_CHARS = MAX_CHUNKS * 75 * 10  # before tokenizing: a token is rarely more than 10 characters
MAX_NESTING = 32  # parentheses in parentheses (each multiplies by 1.1: 1.1^32 = 21)
MAX_WEIGHT = 100.0  # |(text:w)|: past this the embeddings overflow to inf/NaN (an all-NaN image)
MAX_REPEAT = 4  # ComfyUI's: a condition repeated more than 4x to meet the other's length is run apart
_OPEN, _CLOSE = "\0\2", "\0\1"  # escaped parentheses while the text is parsed


def _groups(text):
    """Top-level parenthesised groups and the plain text between them."""
    out, current, depth = [], "", 0
    for char in text:
        if char == "(":
            if depth == 0 and current:
                out.append(current)
                current = ""
            current += char
            depth += 1
        elif char == ")":
            depth -= 1
            current += char
            if depth == 0:
                out.append(current)
                current = ""
        else:
            current += char
    if current:
        out.append(current)
    return out


class PromptError(ValueError):
    pass


def _weighted(text, weight, depth=0):
    if depth > MAX_NESTING:
        raise PromptError(f"The prompt nests parentheses over {MAX_NESTING} deep: use (text:weight) for a strong weight, "
                          "or \\( \\) for literal parentheses.")
    found = []
    for part in _groups(text):
        if len(part) >= 2 and part[0] == "(" and part[-1] == ")":
            inner, inner_weight = part[1:-1], weight * 1.1
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1:])
                    inner = inner[:colon]
                except ValueError:
                    pass
                if not math.isfinite(inner_weight) or abs(inner_weight) > MAX_WEIGHT:
                    raise PromptError(f"The prompt weight in ({part[1:-1][:60]}) is {inner_weight:g}: a weight must be a "
                                      f"number within -{MAX_WEIGHT:g}..{MAX_WEIGHT:g} (1 is plain, 1.1-1.5 is usual).")
            found += _weighted(inner, inner_weight, depth + 1)
        else:
            found.append((part, weight))
    return found


def segments(text):
    """[(text, weight)] of a prompt in ComfyUI's syntax."""
    escaped = text.replace("\\)", _CLOSE).replace("\\(", _OPEN)
    return [(part.replace(_CLOSE, ")").replace(_OPEN, "("), weight) for part, weight in _weighted(escaped, 1.0)]


def _words(segment):
    """The pieces of a segment tokenized one by one: split before each `embedding:` name, whose
    name is dropped (the rest of its piece is kept)."""
    pieces = re.split(f" {EMBEDDING}|\n{EMBEDDING}", segment)
    out = [pieces[0]]
    for piece in pieces[1:]:
        name, _, rest = piece.strip("\n").partition(" ")
        log.warning("PoseForge: textual inversion embeddings are not loaded; left out embedding:%s", name)
        out.append(rest)
    return [p for p in out if p]


def chunks(tokenizer, text, pad):
    """The prompt as ComfyUI's tokenizer batches it: [[(token id, weight)] * 77, ...]."""
    if len(text) > MAX_CHARS:
        raise PromptError(f"The prompt is {len(text):,} characters long; at most {MAX_CHARS:,} are read (and "
                          f"{MAX_CHUNKS * 75:,} tokens encoded).")
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    groups = [[(t, weight) for t in tokenizer(word, verbose=False)["input_ids"][1:-1]]
              for segment, weight in segments(text) for word in _words(segment)]
    batches, batch = [], [(start, 1.0)]
    for group in groups:
        large = len(group) >= GROUP
        while group:
            room = CHUNK - 1 - len(batch)
            if len(group) <= room:
                batch += group
                break
            if large:
                batch += group[:room]
                group = group[room:]
                batch.append((end, 1.0))
            else:
                batch += [(end, 1.0)] + [(pad, 1.0)] * room
            batches.append(batch)
            batch = [(start, 1.0)]
    batch.append((end, 1.0))
    batches.append(batch + [(pad, 1.0)] * (CHUNK - len(batch)))
    if len(batches) > MAX_CHUNKS:
        raise PromptError(f"The prompt is {len(batches)} chunks of 75 tokens; at most {MAX_CHUNKS} "
                          f"({MAX_CHUNKS * 75:,} tokens) are encoded: shorten it.")
    return batches


def _encode(encoder, tokenizer, batches, pad):
    """(hidden states [1, 77 * chunks, width] with the weights applied, pooled or None) of one encoder."""
    import torch

    ids = [[t for t, _ in b] for b in batches]
    weighted = any(w != 1.0 for b in batches for _, w in b)
    if weighted:  # the empty prompt, the point every weight scales from
        ids.append([tokenizer.bos_token_id, tokenizer.eos_token_id] + [pad] * (CHUNK - 2))
    device = host_device.torch_device()  # where the encoder runs (its blocks may be streamed there)
    out = encoder(torch.tensor(ids, device=device), output_hidden_states=True)
    hidden = out.hidden_states[-2]
    pooled = out.text_embeds[:1] if getattr(out, "text_embeds", None) is not None else None
    if weighted:
        empty = hidden[-1]
        weights = torch.tensor([[w for _, w in b] for b in batches], device=device, dtype=hidden.dtype)[..., None]
        hidden = (hidden[:len(batches)] - empty) * weights + empty
    return hidden.reshape(1, -1, hidden.shape[-1]), pooled


def encode(tokenizers, encoders, text):
    """(prompt embeds [1, 77 * chunks, 2048], pooled [1, 1280]) of `text` for SDXL's two encoders."""
    import torch

    (tok, tok2), (te, te2) = tokenizers, encoders
    pad_l, pad_g = tok.eos_token_id, tok2.pad_token_id
    hidden_l, _ = _encode(te, tok, chunks(tok, text, pad_l), pad_l)
    hidden_g, pooled = _encode(te2, tok2, chunks(tok2, text, pad_g), pad_g)
    return torch.cat([hidden_l, hidden_g], dim=-1), pooled


def same_length(positive, negative):
    """(positive, negative, mask) at one sequence length: repeated to the least common multiple of
    their lengths when that is at most MAX_REPEAT times the shorter, `mask` None; else the shorter
    zero-padded to the longer, `mask` [2, length] (1 keep, 0 padding; the negative's row first, as the
    pipeline batches them) for the cross-attention to ignore the padding."""
    import torch

    short, long_ = sorted((positive.shape[1], negative.shape[1]))
    length = math.lcm(short, long_)
    if length <= MAX_REPEAT * short:
        return positive.repeat(1, length // positive.shape[1], 1), negative.repeat(1, length // negative.shape[1], 1), None
    mask = torch.zeros(2, long_, device=positive.device)
    padded = []
    for row, embeds in ((1, positive), (0, negative)):
        mask[row, :embeds.shape[1]] = 1
        padded.append(torch.nn.functional.pad(embeds, (0, 0, 0, long_ - embeds.shape[1])))
    return padded[0], padded[1], mask


def pipeline_embeds(tokenizer, tokenizer_2, encoders, text, negative=None):
    """The pipeline's embedding arguments for `text` (and `negative`, None: no guidance), encoded as
    ComfyUI encodes a prompt."""
    positive, pooled = encode((tokenizer, tokenizer_2), encoders, text)
    if negative is None:
        return {"prompt_embeds": positive, "pooled_prompt_embeds": pooled}
    against, against_pooled = encode((tokenizer, tokenizer_2), encoders, negative)
    positive, against, mask = same_length(positive, against)
    embeds = {"prompt_embeds": positive, "pooled_prompt_embeds": pooled, "negative_prompt_embeds": against,
              "negative_pooled_prompt_embeds": against_pooled}
    return dict(embeds, text_mask=mask) if mask is not None else embeds


@contextlib.contextmanager
def masked(modules, mask):
    """`mask` ([negative row, positive row], 1 keep / 0 padding, from same_length) given to every
    cross-attention layer of `modules` (the UNet, the ControlNet) while the block runs, as the additive
    attention mask diffusers' processors take; None: nothing."""
    if mask is None:
        yield
        return

    biases = {}  # (device, dtype, batch) -> the additive mask: made once, not in every layer at every step

    def hook(layer, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # [negatives..., positives...]
        key = (hidden.device, hidden.dtype, hidden.shape[0])
        if key not in biases:
            rows = mask.to(hidden.device, hidden.dtype).repeat_interleave(hidden.shape[0] // 2, 0)
            biases[key] = ((1 - rows) * -10000.0)[:, None, :]  # as the UNet turns its own mask into
        kwargs["attention_mask"] = biases[key]
        return args, kwargs

    layers = [m for net in modules if net is not None for m in net.modules() if getattr(m, "is_cross_attention", False)]
    handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
