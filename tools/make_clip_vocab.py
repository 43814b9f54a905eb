"""Write the CLIP BPE tokenizer files (vocab.json, merges.txt) the SDXL loader uses outside
ComfyUI, from OpenAI CLIP's bpe_simple_vocab_16e6.txt.gz (MIT; shipped by open_clip_torch and
clip-anytorch). Inside ComfyUI the loader uses ComfyUI's own comfy/sd1_tokenizer/ instead.

    python tools/make_clip_vocab.py path/to/bpe_simple_vocab_16e6.txt.gz local/clip_vocab
"""
import gzip
import json
import os
import sys


def bytes_to_unicode():
    """CLIP's reversible byte -> printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def main(src, out):
    lines = gzip.open(src).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]  # line 0 is a header; 48894 merges
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({tok: i for i, tok in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges))
    print(f"{len(vocab)} tokens, {len(merges)} merges -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
