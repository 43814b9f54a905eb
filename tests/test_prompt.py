"""Prompts as ComfyUI reads them (local/prompt.py): the same embeddings as ComfyUI's own
CLIPTextEncode on the same tiny checkpoint file, inside the real ComfyUI; and, outside it, what
weights and long prompts do to the image."""
import pytest
import torch

from conftest import PACK, pf
from test_sdxl import FAST, pose_map, pose_run, t2i

prompt = pf("local.prompt")
sdxl_local = pf("local.sdxl")
PROMPTS = {
    "plain": "a photo of a dancer on a stage, studio light",
    "weighted": "a photo of a (dancer:1.4) on a stage, (studio light:0.6)",
    "nested": "a ((dancer)) on a (stage with (red (curtains)))",
    "escaped": "a dancer \\(in a costume\\) on (a stage:1.2), \\(not weighted\\)",
    "long": ", ".join(f"detail number {i} with ornament" for i in range(30)),  # 201 tokens: 3 chunks
}


def details(n):
    return ", ".join(f"detail number {i} with ornament" for i in range(n))


def test_past_four_repeats_the_two_prompts_run_apart_by_masking(sdxl, sdxl_files, monkeypatch):
    """5 and 2 chunks: their least common multiple (10) is over 4x the shorter, so (as ComfyUI runs them
    apart) the negative is padded to 5 chunks and its padding masked out of the cross-attention: the
    image is the one the 10-chunk repetition gives, at half the length."""
    tok, tok2 = sdxl_local.tokenizers()
    positive, negative = details(50), details(15)
    assert [len(prompt.chunks(tok, t, tok.eos_token_id)) for t in (positive, negative)] == [5, 2]
    parts = sdxl_local.checkpoint(sdxl_files[1], "fp32")
    embeds = pf("local.prompt").pipeline_embeds(tok, tok2, (parts["text_encoder"].net, parts["text_encoder_2"].net),
                                      positive, negative)
    assert embeds["prompt_embeds"].shape == embeds["negative_prompt_embeds"].shape == (1, 5 * 77, 80)
    assert embeds["text_mask"].tolist() == [[1.0] * 154 + [0.0] * 231, [1.0] * 385]
    for run in (t2i, lambda handle, **kw: pose_run(handle, pose_map(), **kw)):
        masked = run(sdxl, prompt=positive, negative_prompt=negative)["result"][0]
        monkeypatch.setattr(prompt, "MAX_REPEAT", 10)
        repeated = run(sdxl, prompt=positive, negative_prompt=negative)["result"][0]
        monkeypatch.setattr(prompt, "MAX_REPEAT", 4)
        assert torch.allclose(masked, repeated, atol=1e-4) and not torch.equal(masked, run(sdxl)["result"][0])


def test_huge_prompts_and_weights_are_refused_before_anything_loads(sdxl):
    residency = pf("host.residency")
    residency.release_all()
    for text, match in ((details(400), "chunks of 75 tokens; at most 32"), ("x" * 30_000, "characters long"),
                        ("a (red:nan) cat", "weight .* is nan"), ("a (red:1e308) cat", "weight .* is 1e.308"),
                        ("a (red:-inf) cat", "is -inf"), ("(" * 5000 + "x" + ")" * 5000, "nests parentheses")):
        with pytest.raises(prompt.PromptError, match=match):
            t2i(sdxl, prompt=text)
        with pytest.raises(prompt.PromptError, match=match):
            t2i(sdxl, negative_prompt=text)
    assert residency.cached_keys() == []


def test_the_parser_reads_comfyuis_syntax():
    assert prompt.segments("a (red:1.5) cat") == [("a ", 1.0), ("red", 1.5), (" cat", 1.0)]
    assert prompt.segments("((big))")[0] == ("big", pytest.approx(1.21))
    assert prompt.segments("((big:0.5))") == [("big", 0.5)]  # an explicit weight replaces what it is nested in
    assert prompt.segments("\\(literal\\) (x:oops)") == [("(literal) ", 1.0), ("x:oops", pytest.approx(1.1))]
    tok, _ = sdxl_local.tokenizers()
    chunks = prompt.chunks(tok, PROMPTS["long"], tok.eos_token_id)
    assert len(chunks) == 3 and all(len(c) == 77 for c in chunks)
    assert all(c[0][0] == tok.bos_token_id for c in chunks)


def test_weight_one_is_the_plain_prompt_and_other_weights_change_the_image(sdxl):
    plain = t2i(sdxl, prompt="a red cat")["result"][0]
    assert torch.equal(t2i(sdxl, prompt="a (red:1.0) cat")["result"][0], plain)
    assert not torch.equal(t2i(sdxl, prompt="a (red:1.5) cat")["result"][0], plain)


def test_words_after_token_77_change_the_image(sdxl):
    long = PROMPTS["long"]
    assert len(sdxl_local.tokenizers()[0](long, verbose=False)["input_ids"]) > 100
    assert not torch.equal(t2i(sdxl, prompt=long)["result"][0], t2i(sdxl, prompt=long + ", and a blue moon")["result"][0])


def test_a_long_positive_and_a_short_negative_are_repeated_to_one_length(sdxl, sdxl_files):
    parts = sdxl_local.checkpoint(sdxl_files[1], "fp32")
    tok, tok2 = sdxl_local.tokenizers()
    embeds = pf("local.prompt").pipeline_embeds(tok, tok2, (parts["text_encoder"].net, parts["text_encoder_2"].net),
                                      PROMPTS["long"], "blurry")
    assert embeds["prompt_embeds"].shape == embeds["negative_prompt_embeds"].shape == (1, 231, 80)
    short = embeds["negative_prompt_embeds"]
    assert torch.equal(short[:, :77], short[:, 77:154])  # repeated, not padded


@pytest.fixture(scope="module")
def comfy_clip(comfy_modules, sdxl_files):
    """ComfyUI's own SDXL CLIP (comfy.sd.CLIP with comfy.sdxl_clip's tokenizer and model, their text
    model configs the tiny checkpoint's), loaded from the tiny checkpoint file as ComfyUI's SDXL
    support reads it."""
    import json
    import os

    sd_module, clip_module = comfy_modules["comfy.sd"], comfy_modules["comfy.sdxl_clip"]
    supported, base = comfy_modules["comfy.supported_models"], comfy_modules["comfy.supported_models_base"]
    _, path, _ = sdxl_files
    config = os.path.splitext(path)[0] + ".config"

    def text_config(part):
        with open(os.path.join(config, part, "config.json")) as f:
            return json.load(f)

    options = {"clip_l_model_config": text_config("text_encoder"), "clip_g_model_config": text_config("text_encoder_2"),
               "dtype": torch.float32}  # as --fp32-text-enc: on the CPU ComfyUI stores text encoders in fp16
    clip = sd_module.CLIP(base.ClipTarget(clip_module.SDXLTokenizer, clip_module.SDXLClipModel), model_options=options)
    state = supported.SDXL(supported.SDXL.unet_config).process_clip_state_dict(
        comfy_modules["comfy.utils"].load_torch_file(path))
    missing, unexpected = clip.load_sd(state, full_model=True)
    assert not unexpected and all(k.endswith(("logit_scale", "clip_l.transformer.text_projection.weight"))
                                  for k in missing), (missing, unexpected)
    return clip


@pytest.mark.parametrize("name", list(PROMPTS))
def test_embeddings_equal_comfyuis_clip_text_encode(comfy_host, comfy_clip, comfy_modules, sdxl_files, name):
    (cond, extra), = comfy_modules["nodes"].CLIPTextEncode().encode(comfy_clip, PROMPTS[name])[0]
    parts = sdxl_local.checkpoint(sdxl_files[1], "fp32")
    ours, pooled = prompt.encode(sdxl_local.tokenizers(), (parts["text_encoder"].net, parts["text_encoder_2"].net),
                                 PROMPTS[name])
    assert ours.shape == cond.shape and pooled.shape == extra["pooled_output"].shape
    assert (ours - cond).abs().max() < 1e-4 and (pooled - extra["pooled_output"]).abs().max() < 1e-4


def test_segmind_is_sent_the_prompt_as_written(fake):
    text = PROMPTS["weighted"]
    Text2Image = PACK.NODE_CLASS_MAPPINGS["PF_SDXLText2Image"]
    Text2Image().generate(backend="segmind", **dict(FAST, prompt=text, width=512, height=512, num_inference_steps=25))
    assert fake.requests[0][2]["prompt"] == text
