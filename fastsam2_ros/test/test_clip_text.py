"""Tests of core/clip_text.py on the real open_clip architectures with random weights (no downloads).

ViT-B-16 (the production model) is built once per module from a random state dict saved to disk and
loaded through the real loading path; a tiny custom-block ViT registered as an open_clip config
covers open_clip's own ``Attention`` class and the error paths cheaply.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

_PKG_ROOT = Path(__file__).resolve().parents[1]  # .../fastsam2_ros (holds the fastsam2_ros package)
if str(_PKG_ROOT) not in sys.path:
    sys.path.insert(0, str(_PKG_ROOT))

open_clip = pytest.importorskip("open_clip")

from fastsam2_ros.core.clip_text import ClipTextEncoder  # noqa: E402
from fastsam2_ros.core.errors import CheckpointError, InputError  # noqa: E402

TINY = "fs2test-tiny-custom-vit"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "head_width": 16, "layers": 2,
                   "ls_init_value": 0.5, "scale_heads": True, "scale_attn_inner": True, "scale_attn": True},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 1},
}


def _random_model(name: str, seed: int) -> torch.nn.Module:
    """The real open_clip architecture with random weights (also LayerNorm/LayerScale/head_scale)."""
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.ndim == 1 and ("ln" in n or "gamma" in n or "head_scale" in n or n.endswith("bias")):
                p.add_(0.1 * torch.randn_like(p))
            elif "head_scale" in n:
                p.mul_(1.0 + 0.5 * torch.rand_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def vit_b16(tmp_path_factory):
    src = _random_model("ViT-B-16", seed=0)
    path = tmp_path_factory.mktemp("clip") / "open_clip_pytorch_model.bin"
    torch.save(src.state_dict(), path)
    enc = ClipTextEncoder("ViT-B-16", weights_path=str(path))
    yield enc, src
    enc.release()


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfg")
    (d / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(d)
    return TINY


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _diag_mask(n_tokens: int) -> torch.Tensor:
    """Attention mask that lets each token attend only to itself (attention == value path)."""
    m = torch.full((n_tokens, n_tokens), float("-inf"))
    m.fill_diagonal_(0.0)
    return m


# ---------------------------------------------------------------- ViT-B-16, loaded from a file
def test_vit_b16_loaded_by_path(vit_b16):
    enc, src = vit_b16
    assert enc.embed_dim == 512 and enc.grid_size == (14, 14) and enc.image_size == (224, 224)
    assert not enc.random_weights
    own = enc._model.state_dict()
    for k, v in src.state_dict().items():
        assert torch.equal(own[k], v), k
    blk = enc._model.visual.transformer.resblocks[-1]
    assert isinstance(blk.attn, torch.nn.MultiheadAttention)  # what ViT-B-16 uses in open_clip 3.x


def test_encode_text_shapes_norm_and_reference(vit_b16):
    enc, src = vit_b16
    e = enc.encode_text(["a red mug", "a black cat", "a red mug"])
    assert e.shape == (3, 512) and e.dtype == torch.float32
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    assert torch.equal(e[0], e[2])
    assert float(e[0] @ e[1]) < 0.999  # different texts -> different embeddings
    with torch.no_grad():
        ref = F.normalize(src.encode_text(open_clip.get_tokenizer("ViT-B-16")(["a black cat"])), dim=-1)
    torch.testing.assert_close(e[1:2], ref, atol=1e-5, rtol=1e-5)


def test_encode_text_cache(vit_b16):
    enc, _ = vit_b16
    before = enc.cache_info()
    a = enc.encode_text(["cache probe one", "cache probe two"])
    mid = enc.cache_info()
    assert mid["misses"] - before["misses"] == 2
    b = enc.encode_text(["cache probe two", "cache probe one"])
    after = enc.cache_info()
    assert after["misses"] == mid["misses"] and after["hits"] - mid["hits"] == 2
    assert torch.equal(a[0], b[1]) and torch.equal(a[1], b[0])
    b.zero_()  # the returned tensor is a copy: the cache is unaffected
    assert torch.equal(enc.encode_text(["cache probe one"])[0], a[0])


def test_preprocess_matches_manual(vit_b16):
    enc, _ = vit_b16
    img = _rgb(224, 224)
    x = enc.preprocess(img)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    ref = (torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0 - mean) / std
    torch.testing.assert_close(x, ref)
    assert enc.preprocess(_rgb(37, 91)).shape == (1, 3, 224, 224)  # whole frame squashed to square


def test_trunk_matches_open_clip_forward(vit_b16):
    """Our embedding + blocks reproduce open_clip's own image forward (CLS path)."""
    enc, src = vit_b16
    x = enc.preprocess(_rgb(40, 60, seed=1))
    visual = enc._model.visual
    with torch.no_grad():
        t = enc._tokens_before_last_block(x)
        t = visual.transformer.resblocks[-1](t)
        ours = visual.ln_post(t[:, 0]) @ visual.proj
        ref = src.visual(x)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_dense_features_equal_hand_computed_value_path(vit_b16):
    enc, _ = vit_b16
    img = _rgb(48, 32, seed=2)  # tiny frame, upsampled to 224
    dense = enc.dense_image_features(img)
    assert dense.shape == (512, 14, 14) and dense.dtype == torch.float32
    torch.testing.assert_close(dense.norm(dim=0), torch.ones(14, 14), atol=1e-5, rtol=0)

    visual = enc._model.visual
    blk = visual.transformer.resblocks[-1]
    with torch.no_grad():
        tokens = visual._embeds(enc.preprocess(img))  # open_clip's own patch embedding
        for b in visual.transformer.resblocks[:-1]:
            tokens = b(tokens)
        d = tokens.shape[-1]
        for r, c in [(0, 0), (5, 9), (13, 13)]:
            x = tokens[0, 1 + r * 14 + c]
            h = F.layer_norm(x, (d,), blk.ln_1.weight, blk.ln_1.bias, blk.ln_1.eps)
            v = blk.attn.in_proj_weight[2 * d:] @ h + blk.attn.in_proj_bias[2 * d:]
            o = blk.attn.out_proj.weight @ v + blk.attn.out_proj.bias
            o = F.layer_norm(o, (d,), visual.ln_post.weight, visual.ln_post.bias, visual.ln_post.eps)
            f = F.normalize(o @ visual.proj, dim=0)
            torch.testing.assert_close(dense[:, r, c], f, atol=1e-4, rtol=1e-4)

        # and it is NOT the ordinary last block (q-k attention) output
        normal = visual.ln_post(blk(tokens)[:, 1:]) @ visual.proj
        normal = F.normalize(normal[0], dim=-1).T.reshape(512, 14, 14)
        assert (normal * dense).sum(0).mean() < 0.99


def test_value_path_is_self_only_attention(vit_b16):
    """Value path == open_clip's attention with each token attending only to itself."""
    enc, _ = vit_b16
    visual = enc._model.visual
    blk = visual.transformer.resblocks[-1]
    with torch.no_grad():
        tokens = enc._tokens_before_last_block(enc.preprocess(_rgb(64, 64, seed=3)))
        mask = _diag_mask(tokens.shape[1])
        ref = blk.ls_1(blk.attention(blk.ln_1(tokens), attn_mask=mask))
        torch.testing.assert_close(enc._last_block_value_path(tokens), ref, atol=1e-4, rtol=1e-4)
        enc.dense_mode = "maskclip"
        try:
            torch.testing.assert_close(enc._last_block_value_path(tokens), blk(tokens, attn_mask=mask),
                                       atol=1e-4, rtol=1e-4)
        finally:
            enc.dense_mode = "clearclip"


def test_dense_grid_resize(vit_b16):
    enc, _ = vit_b16
    img = _rgb(120, 160, seed=4)
    native = enc.dense_image_features(img)
    torch.testing.assert_close(enc.dense_image_features(img, grid=(14, 14)), native)
    g = enc.dense_image_features(img, grid=(64, 64))
    assert g.shape == (512, 64, 64)
    torch.testing.assert_close(g.norm(dim=0), torch.ones(64, 64), atol=1e-5, rtol=0)
    ref = F.normalize(F.interpolate(native[None], size=(64, 64), mode="bilinear", align_corners=False)[0], dim=0)
    assert float((ref * g).sum(0).min()) > 0.99  # same direction (resize before/after normalising)
    assert enc.dense_image_features(img, grid=[7, 9]).shape == (512, 7, 9)
    patches = enc.patch_features(img)  # one ViT pass, for every grid of the frame
    assert torch.equal(enc.dense_image_features(img, grid=(64, 64), patches=patches), g)
    assert torch.equal(enc.dense_image_features(img, patches=patches), native)


def test_dense_text_relevance_shape(vit_b16):
    enc, _ = vit_b16
    e = enc.encode_text(["the red mug"])
    f = enc.dense_image_features(_rgb(64, 48), grid=(64, 64))
    s = torch.einsum("c,chw->hw", e[0], f)
    assert s.shape == (64, 64) and float(s.abs().max()) <= 1.0 + 1e-5


@pytest.mark.parametrize("texts", ["a dog", [], [""], ["   "], ["ok", 3], [None], ["x" * 301], ("ok", b"bytes")])
def test_bad_texts(vit_b16, texts):
    enc, _ = vit_b16
    with pytest.raises(InputError):
        enc.encode_text(texts)


def test_max_text_length_boundary(vit_b16):
    enc, _ = vit_b16
    assert enc.encode_text(["x" * 300]).shape == (1, 512)


def test_a_text_longer_than_the_clip_context_is_refused_not_cut(vit_b16):
    """open_clip's tokenizer cuts at 77 tokens without a word: two prompts that differ only past
    it got the same embedding. Such a text is refused, naming its token count; a caption is cut
    at a word boundary to what the encoder reads (shorten_to_clip_context)."""
    from fastsam2_ros.core.clip_text import shorten_to_clip_context

    enc, _ = vit_b16
    base = "a red mug " * 25  # 75 tokens
    assert len(base) < enc.max_text_length
    for side in ("left", "right"):
        with pytest.raises(InputError, match=r"texts\[0\] is \d+ CLIP tokens; .* at most 75"):
            enc.encode_text([base + "on the far " + side])
    short = shorten_to_clip_context(base + "on the far left", "ViT-B-16")
    assert base.startswith(short) and len(short) < len(base)
    assert enc.encode_text([short]).shape == (1, 512)  # fits exactly: no refusal
    with pytest.raises(InputError):
        enc.encode_text([short + " mug"])
    assert shorten_to_clip_context("a red mug", "ViT-B-16") == "a red mug"
    # non-Latin scripts take several tokens a character: 33 characters are over the context
    with pytest.raises(InputError, match="CLIP tokens"):
        enc.encode_text(["红色的杯子" * 7])


@pytest.mark.parametrize("text", ["red ball <end_of_text> on the left", "<START_OF_TEXT> cup",
                                  "a mug<end_of_text>"])
def test_a_text_with_clips_own_start_or_end_token_is_refused(vit_b16, text):
    """open_clip reads "<end_of_text>" in a text as its end token, and the encoder pools at the
    first one: "red ball <end_of_text> on the left" and "... on the right" embedded as "red ball"."""
    enc, _ = vit_b16
    with pytest.raises(InputError, match=r"texts\[0\] is cut short by one of CLIP's own tokens"):
        enc.encode_text([text])
    assert enc.encode_text(["red ball <end of text> on the left"]).shape == (1, 512)


def test_a_text_without_spaces_is_cut_between_characters_to_the_clip_context():
    """A caption without spaces (a CJK captioner) is one "word": the word cut kept nothing, and
    the eval's verbose variant was "" (refused as "the caption model gave no phrase")."""
    from fastsam2_ros.core.clip_text import (clip_token_count, clip_tokenizer,
                                             shorten_to_clip_context, text_token_limit)

    tok = clip_tokenizer("ViT-B-16")
    caption = "一只戴着红色项圈的棕色小狗正坐在客厅里的木桌上看着镜头旁边还有一个杯子"  # 88 tokens
    assert clip_token_count(tok, caption) > text_token_limit(tok) == 75
    short = shorten_to_clip_context(caption, "ViT-B-16")
    assert short and caption.startswith(short)
    assert clip_token_count(tok, short) <= 75 < clip_token_count(tok, caption[:len(short) + 1])
    # a long first word before others: still cut between its characters
    assert shorten_to_clip_context(caption + " dog", "ViT-B-16") == short


@pytest.mark.parametrize("text", ["\x7f", "\ufeff", "red\x85mug", "&nbsp;", "&#32;", "&amp;nbsp;"])
def test_texts_the_encoder_would_read_as_empty_are_refused(vit_b16, text):
    """The text prompt rule (prompts.validate_text) holds for the encoder too: DEL, C1 controls
    and texts of only format characters became the empty text (start and end tokens), and so did
    HTML entities of spaces, which CLIP's text cleaning unescapes and drops."""
    enc, _ = vit_b16
    with pytest.raises(InputError, match=r"texts\[0\]"):
        enc.encode_text([text])


@pytest.mark.parametrize("img", [
    np.zeros((32, 32, 3), np.float32), np.zeros((32, 32), np.uint8), np.zeros((32, 32, 4), np.uint8),
    np.zeros((0, 32, 3), np.uint8), np.zeros((2, 32, 32, 3), np.uint8), [[0, 0, 0]],
])
def test_bad_images(vit_b16, img):
    enc, _ = vit_b16
    with pytest.raises(InputError):
        enc.dense_image_features(img)


@pytest.mark.parametrize("grid", [(0, 4), (4,), (4, 4, 4), (2.0, 3), (True, 4), "64", (4096, 4)])
def test_bad_grid(vit_b16, grid):
    enc, _ = vit_b16
    with pytest.raises(InputError):
        enc.dense_image_features(_rgb(16, 16), grid=grid)


# ---------------------------------------------------------------- tiny custom-block ViT
def test_tiny_custom_attention_random_weights_warns(tiny_cfg):
    with pytest.warns(RuntimeWarning, match="RANDOM"):
        enc = ClipTextEncoder(tiny_cfg, allow_random_weights=True)
    assert enc.random_weights and enc.embed_dim == 32 and enc.grid_size == (4, 4)
    from open_clip.transformer import Attention
    assert isinstance(enc._model.visual.transformer.resblocks[-1].attn, Attention)
    f = enc.dense_image_features(_rgb(20, 30), grid=(8, 8))
    assert f.shape == (32, 8, 8)
    enc.release()


def test_tiny_custom_value_path_is_self_only_attention(tiny_cfg, tmp_path):
    src = _random_model(tiny_cfg, seed=1)
    path = tmp_path / "tiny.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    for mode in ("clearclip", "maskclip"):
        enc = ClipTextEncoder(tiny_cfg, weights_path=str(path), dense_mode=mode)
        blk = enc._model.visual.transformer.resblocks[-1]
        assert blk.attn.head_scale is not None and not isinstance(blk.ls_1, torch.nn.Identity)
        with torch.no_grad():
            tokens = enc._tokens_before_last_block(enc.preprocess(_rgb(32, 32, seed=5)))
            mask = _diag_mask(tokens.shape[1])
            if mode == "clearclip":
                ref = blk.ls_1(blk.ln_attn(blk.attn(blk.ln_1(tokens), attn_mask=mask)))
            else:
                ref = blk(tokens, attn_mask=mask)
            torch.testing.assert_close(enc._last_block_value_path(tokens), ref, atol=1e-5, rtol=1e-5)
            # trunk consistency on the custom blocks too
            cls = enc._model.visual.ln_post(blk(tokens)[:, 0]) @ enc._model.visual.proj
            torch.testing.assert_close(cls, src.visual(enc.preprocess(_rgb(32, 32, seed=5))),
                                       atol=1e-5, rtol=1e-5)
        enc.release()


def test_state_dict_wrappers_and_lru(tiny_cfg, tmp_path):
    src = _random_model(tiny_cfg, seed=2)
    sd = src.state_dict()
    p1 = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, p1)
    enc = ClipTextEncoder(tiny_cfg, weights_path=str(p1), cache_size=2)
    for k, v in sd.items():
        assert torch.equal(enc._model.state_dict()[k], v), k
    enc.encode_text(["a", "b"])
    enc.encode_text(["a"])          # touch a -> b is the oldest
    enc.encode_text(["c"])          # evicts b
    assert list(enc._cache) == ["a", "c"]
    misses = enc.cache_info()["misses"]
    enc.encode_text(["b", "b"])     # re-encoded once
    assert enc.cache_info()["misses"] == misses + 1 and enc.cache_info()["size"] == 2
    enc.encode_text([f"t{i}" for i in range(5)])  # more new texts than the cache holds
    assert enc.cache_info()["size"] == 2
    enc.release()
    enc.release()  # idempotent
    with pytest.raises(RuntimeError, match="released"):
        enc.encode_text(["a"])


# ---------------------------------------------------------------- loading / model errors
def test_no_weights_is_checkpoint_error():
    with pytest.raises(CheckpointError) as ei:
        ClipTextEncoder("ViT-B-16")
    msg = str(ei.value)
    assert "clip_weights" in msg and "laion2b_s34b_b88k" in msg and "open_clip_pytorch_model.bin" in msg


def test_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "nope.bin"
    with pytest.raises(CheckpointError, match="nope.bin"):
        ClipTextEncoder("ViT-B-16", weights_path=str(missing))
    bad = tmp_path / "garbage.bin"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.bin"):
        ClipTextEncoder("ViT-B-16", weights_path=str(bad))
    notsd = tmp_path / "list.pt"
    torch.save([1, 2, 3], notsd)
    with pytest.raises(CheckpointError, match="list.pt"):
        ClipTextEncoder("ViT-B-16", weights_path=str(notsd))
    with pytest.raises(CheckpointError, match=str(tmp_path.name)):
        ClipTextEncoder("ViT-B-16", weights_path=str(tmp_path))  # a directory


def test_mismatched_state_dict(tiny_cfg, tmp_path):
    sd = _random_model(tiny_cfg, seed=3).state_dict()
    p = tmp_path / "partial.bin"
    torch.save({k: v for k, v in sd.items() if k != "visual.proj"}, p)
    with pytest.raises(CheckpointError, match="missing"):
        ClipTextEncoder(tiny_cfg, weights_path=str(p))
    sd2 = dict(sd)
    sd2["visual.proj"] = torch.zeros(3, 3)
    torch.save(sd2, p)
    with pytest.raises(CheckpointError, match="wrong shape"):
        ClipTextEncoder(tiny_cfg, weights_path=str(p))


def test_the_check_at_configure_takes_and_refuses_what_the_loader_does(tiny_cfg, tmp_path):
    """check_clip_weights (configure, tools before their work) applies the loader's rule without
    reading the tensor data: files the encoder loads pass, a file of another architecture is
    refused with the loader's message, naming the file and the architecture."""
    from safetensors.torch import save_file

    from fastsam2_ros.core.clip_text import check_clip_weights

    sd = _random_model(tiny_cfg, seed=4).state_dict()
    good = {"plain.bin": sd, "wrapped.pt": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
            "scalar_logit.pth": {**sd, "logit_scale": sd["logit_scale"].reshape(1)}}
    for name, obj in good.items():
        torch.save(obj, tmp_path / name)
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "tiny.safetensors")
    torch.save(sd, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    for path in sorted(tmp_path.iterdir()):
        check_clip_weights(tiny_cfg, str(path))
        ClipTextEncoder(tiny_cfg, weights_path=str(path)).release()
    for path in (tmp_path / "plain.bin", tmp_path / "tiny.safetensors"):
        with pytest.raises(CheckpointError) as at_configure:
            check_clip_weights("ViT-B-16", str(path))
        with pytest.raises(CheckpointError) as at_load:
            ClipTextEncoder("ViT-B-16", weights_path=str(path))
        assert str(at_configure.value) == str(at_load.value)
        assert f"CLIP weights '{path}' do not match open_clip architecture 'ViT-B-16'" in str(
            at_load.value)


@pytest.mark.parametrize("name,match", [
    ("RN50", "need an"), ("convnext_base", "need an"), ("ViT-B-16-SigLIP", "need an"),
    ("ViT-L-14-CLIPA", "Hugging Face"), ("roberta-ViT-B-32", "Hugging Face"),
    ("no-such-model", "unknown"), ("hf-hub:laion/x", "schema"), ("coca_ViT-B-32", "attentional"),
])
def test_unsupported_models(name, match):
    with pytest.raises(InputError, match=match):
        ClipTextEncoder(name, allow_random_weights=True)


@pytest.mark.parametrize("kwargs", [dict(max_text_length=0), dict(dense_mode="sclip"), dict(cache_size=-1),
                                    dict(device="not-a-device")])
def test_bad_constructor_args(kwargs):
    with pytest.raises(InputError):
        ClipTextEncoder("ViT-B-16", allow_random_weights=True, **kwargs)


def test_tokenizer_is_offline_simple_tokenizer():
    tok = open_clip.get_tokenizer("ViT-B-16")
    assert type(tok).__name__ == "SimpleTokenizer"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tok(["hello"]).shape == (1, 77)


def test_random_weights_follow_the_seed(monkeypatch):
    """Two trackers with the same seed embedded a text differently (the global random state), so
    a text-only start clicked elsewhere; the process's random state is left alone (CUDA's too:
    the captured Monte-Carlo dropout draws from it)."""
    import torch

    cuda_seeds = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", cuda_seeds.append)
    monkeypatch.setattr(torch.cuda, "manual_seed", cuda_seeds.append)

    from fastsam2_ros.core.clip_text import ClipTextEncoder

    def embedding(seed):
        enc = ClipTextEncoder("ViT-B-16", allow_random_weights=True, seed=seed)
        return enc.encode_text(["a red mug"])

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    cuda_seeds.clear()  # (torch.manual_seed above seeds CUDA too)
    first, again, other = embedding(0), embedding(0), embedding(1)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(torch.rand(1), before) and not cuda_seeds


def test_the_documented_clip_token_limit_is_the_tokenizers():
    """The limit comes from the tokenizer; the parameter's description and the docs state it."""
    from pathlib import Path

    import open_clip

    from fastsam2_ros.core.clip_text import text_token_limit
    from fastsam2_ros.core.config import TrackerConfig
    from fastsam2_ros.ros.parameters import spec_map

    limit = text_token_limit(open_clip.get_tokenizer(TrackerConfig().clip_model))
    assert f"{limit} tokens" in spec_map()["max_text_length"].description
    docs = Path(__file__).resolve().parents[2] / "docs"
    for name in ("ros.md", "evaluation.md"):
        if (docs / name).is_file():
            assert f"{limit} tokens" in (docs / name).read_text(), name


def test_a_tokenizer_is_only_fetched_for_an_architecture_the_tracker_takes(monkeypatch):
    """Checking a text file with a Hugging Face tokenizer model (SigLIP) called open_clip's
    get_tokenizer, which downloads it: ~50 s of retries offline, a download online."""
    import open_clip

    from fastsam2_ros.core.clip_text import clip_tokenizer
    from fastsam2_ros.core.errors import InputError

    monkeypatch.setattr(open_clip, "get_tokenizer",
                        lambda *a, **k: pytest.fail("fetched the tokenizer before checking the model"))
    with pytest.raises(InputError, match="open_clip model 'ViT-B-16-SigLIP'"):
        clip_tokenizer("ViT-B-16-SigLIP")
