"""Automatic prompt (core/auto_prompt.py): proposal scoring and selection on constructed masks,
phrase candidates and MMR ranking (pure), the refinement with the real all-MiniLM-L6-v2 weights,
the caption stage with a tiny random BLIP built from a transformers config, the RPN with random
torchvision weights, sam2's mask generator on a random SAM 2, and tracker.auto_prompt end to end."""

import importlib.util
import json
import pathlib
import warnings

import numpy as np
import pytest

from fastsam2_ros.core.auto_prompt import (
    MAX_PHRASE_WORDS, Candidate, Proposal, candidate_phrases, centre_prior, head_noun, noun_chunks,
    proposal_score, rank_candidates, region_crop, select_proposal, size_prior)
from fastsam2_ros.core.config import TrackerConfig
from fastsam2_ros.core.errors import AutoPromptFailed, CheckpointError, InputError
from tiny_models import make_tiny_blip, make_tiny_blip_head, needs_minilm, save_random_rpn

HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
needs_transformers = pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")


def square(shape, cx, cy, half):
    m = np.zeros(shape, dtype=bool)
    m[max(0, cy - half):cy + half, max(0, cx - half):cx + half] = True
    return m


# ------------------------------------------------------------------------------------------------
# proposal scoring and selection (pure)
# ------------------------------------------------------------------------------------------------
def test_size_prior_peaks_at_a_tenth_of_the_frame_and_falls_off_both_ways():
    assert size_prior(0.10) == pytest.approx(1.0)
    assert size_prior(0.0) == 0.0
    small = [size_prior(a) for a in (0.05, 0.01, 0.001)]
    large = [size_prior(a) for a in (0.2, 0.5, 1.0)]
    assert small == sorted(small, reverse=True) and large == sorted(large, reverse=True)
    # the values documented next to SIZE_PRIOR_*
    assert [round(size_prior(a), 2) for a in (0.025, 0.4, 0.01, 0.6, 0.9)] == [0.51, 0.51, 0.16, 0.33, 0.19]


def test_centre_prior_prefers_the_centre():
    assert centre_prior(0, 0) == pytest.approx(1.0)
    assert round(centre_prior(1, 0), 2) == 0.41 and round(centre_prior(-1, 1), 2) == 0.17  # as documented
    assert centre_prior(0.5, 0.5) > centre_prior(1, 0) > centre_prior(1, 1)


def test_proposal_score_is_quality_times_priors():
    shape = (120, 160)
    centre = square(shape, 80, 60, 22)  # ~10 % of the frame, centred
    corner = square(shape, 22, 22, 22)
    speck = square(shape, 80, 60, 2)
    whole = np.ones(shape, dtype=bool)
    s = {k: proposal_score(0.9, m) for k, m in
         dict(centre=centre, corner=corner, speck=speck, whole=whole).items()}
    assert s["centre"] > max(s["corner"], s["speck"], s["whole"])
    assert proposal_score(0.45, centre) == pytest.approx(s["centre"] / 2)
    assert proposal_score(0.9, np.zeros(shape, bool)) == 0.0
    assert proposal_score(0.0, centre) == 0.0


def test_select_proposal_picks_the_best_and_skips_tracked_objects():
    shape = (120, 160)
    props = [Proposal(square(shape, 20, 20, 15), 0.95, "t"),   # corner, best quality
             Proposal(square(shape, 80, 60, 22), 0.80, "t"),   # centred, object-sized
             Proposal(square(shape, 120, 70, 20), 0.85, "t")]
    best, scores = select_proposal(props)
    assert best == 1 and len(scores) == 3 and scores[1] == max(scores)
    # the centred region is already tracked: the next best one is started instead
    best2, scores2 = select_proposal(props, taken=[square(shape, 80, 60, 25)])
    assert best2 == 2 and scores2[1] == 0.0
    assert select_proposal([])[0] is None
    assert select_proposal(props, min_score=1.0)[0] is None


def box_mask(shape, x0, y0, x1, y1):
    """A region proposal network's region: the box's pixels, inclusive bounds."""
    m = np.zeros(shape, dtype=bool)
    m[y0:y1 + 1, x0:x1 + 1] = True
    return m


class _FixedProposer:
    def __init__(self, proposals):
        self.proposals = proposals

    def propose(self, image):
        return list(self.proposals)


def test_a_second_automatic_prompt_neither_picks_nor_clicks_the_tracked_object():
    """An RPN returns nested boxes around one object: the box twice its size has a quarter of its
    pixels on it, was not skipped, and its click (the box centre) started object 2 on object 1."""
    from fastsam2_ros.core.auto_prompt import AutoPrompter

    shape = (240, 320)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    obj1 = (xx - 160) ** 2 + (yy - 120) ** 2 < 30 ** 2  # tracked already
    props = [Proposal(box_mask(shape, 130, 90, 190, 150), 0.99, "rpn"),  # tight box on object 1
             Proposal(box_mask(shape, 100, 60, 220, 180), 0.90, "rpn"),  # twice its size
             Proposal(box_mask(shape, 10, 10, 60, 50), 0.90, "rpn")]  # another object
    best, scores = select_proposal(props, taken=[obj1])
    assert best == 2 and scores[0] == scores[1] == 0.0
    prompter = AutoPrompter(TrackerConfig(device="cpu"), None)
    prompter._proposer = _FixedProposer(props)
    frame = np.full(shape + (3,), 90, np.uint8)
    plan = prompter.plan(frame, taken=[obj1], obj_id=2)
    assert plan.box == (10, 10, 60, 50) and not obj1[plan.click[1], plan.click[0]]
    # a region that is kept (a strip through the object's edge): its click is off the object
    strip = box_mask(shape, 0, 136, 319, 156)  # centre (160, 146) lies on object 1
    prompter._proposer = _FixedProposer([Proposal(strip, 0.9, "rpn")])
    x, y = prompter.plan(frame, taken=[obj1], obj_id=2).click
    assert strip[y, x] and not obj1[y, x]


def test_the_click_of_a_box_region_is_its_centre_not_one_end():
    """A box's distance transform is a ridge of equal maxima; the first of them in row-major order
    is at the box's left end, on the background for a diagonal object (a pen, an arm link)."""
    from fastsam2_ros.core.auto_prompt import AutoPrompter
    from fastsam2_ros.core.prompts import representative_click

    shape = (240, 320)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    x0, y0, x1, y1 = 60, 100, 259, 149
    bar = (np.abs((yy - y0) - (xx - x0) / (x1 - x0) * (y1 - y0)) < 6) & (xx >= x0) & (xx <= x1)
    frame = np.full(shape + (3,), 90, np.uint8)
    frame[bar] = (230, 230, 40)
    box = box_mask(shape, x0, y0, x1, y1)
    prompter = AutoPrompter(TrackerConfig(device="cpu"), None)
    prompter._proposer = _FixedProposer([Proposal(box, 0.95, "rpn")])
    plan = prompter.plan(frame, obj_id=1)
    assert plan.click == (159, 124) and bar[124, 159]
    # the evaluation's documented click protocol keeps its tie rule (first pixel, row-major)
    assert representative_click(box) == (84, 124)


def test_region_crop_keeps_a_margin_inside_the_image():
    img = np.zeros((100, 200, 3), np.uint8)
    crop = region_crop(img, (50, 20, 69, 39))  # 20 x 20 box, 15 % margin = 3 px per side
    assert crop.shape == (26, 26, 3)
    assert region_crop(img, (0, 0, 199, 99)).shape == (100, 200, 3)  # clipped at the borders
    # a thin region still gives a crop the caption stage takes (it was refused as "too small")
    assert region_crop(img, (50, 20, 120, 20)).shape == (8, 93, 3)
    assert region_crop(img, (0, 99, 0, 99)).shape == (8, 8, 3)  # in the corner: grown inwards


# ------------------------------------------------------------------------------------------------
# phrase candidates and ranking (pure)
# ------------------------------------------------------------------------------------------------
PAPER_CAPTION = ("A small fluffy dog with brown fur is being gently held by a person's hand holding "
                 "grooming tools around its face during grooming")


def test_noun_chunks_break_at_function_words_and_verbs():
    chunks = [c.text for c in noun_chunks("a red coffee mug sitting on a wooden table next to a laptop")]
    assert chunks == ["red coffee mug", "wooden table", "laptop"]
    chunks = [c.text for c in noun_chunks("there is a black cat sleeping on a grey sofa. A sleeping dog")]
    assert chunks == ["black cat", "grey sofa", "sleeping dog"]  # a participle after "a" is a modifier
    assert [c.text for c in noun_chunks("a tall building near the ceiling")] == ["tall building", "ceiling"]


def test_candidates_are_short_and_never_start_or_end_with_a_function_word():
    cands = candidate_phrases(PAPER_CAPTION)
    texts = [c.text for c in cands]
    assert "small fluffy dog" in texts and "dog" in texts and "small fluffy dog with brown fur" in texts
    for c in cands:
        words = c.text.split()
        assert 1 <= len(words) <= MAX_PHRASE_WORDS
        assert words[0].lower() not in {"a", "the", "with", "is", "by"}
        assert words[-1].lower() not in {"a", "the", "with", "is", "by"}
        assert c.text in PAPER_CAPTION  # extractive
    assert candidate_phrases("") == [] and candidate_phrases("it is there") == []


def test_head_noun():
    assert head_noun("small fluffy dog") == "dog"
    assert head_noun("dog with brown fur") == "dog"
    assert head_noun("") == ""


def test_words_hold_curly_apostrophes_and_combining_marks():
    """A caption's words broke at ’ (U+2019, the paper's own "person’s hand ... it’s face") and at
    combining marks: "woman s red umbrella" and a phrase "s face", NFD "crème" as "cre",
    Devanagari without its vowel signs."""
    import unicodedata

    curly = PAPER_CAPTION.replace("person's", "person’s").replace("its face", "it’s face")
    texts = [c.text for c in candidate_phrases(curly)]
    assert "person's hand" in texts and "face" in texts
    assert all(t.split()[0] not in ("s", "it's") for t in texts)
    assert [c.text for c in noun_chunks("a woman’s red umbrella")] == ["woman's red umbrella"]
    nfd = unicodedata.normalize("NFD", "a crème brûlée with a café spoon")
    assert head_noun(nfd) == "brûlée"  # of the first chunk, before "with"
    assert [c.text for c in noun_chunks(nfd)] == ["crème brûlée", "café spoon"]
    assert [c.text for c in noun_chunks("एक कुत्ता")] == ["एक कुत्ता"]  # vowel signs, virama
    assert [c.text for c in noun_chunks("a \u0301dog")] == ["dog"]  # a mark starts no word


def test_rank_candidates_mmr_prefers_different_alternatives():
    cands = [Candidate("red mug", 0, 2), Candidate("red mugs", 0, 2), Candidate("wooden table", 5, 7)]
    relevance = np.array([0.80, 0.79, 0.60])
    sim = np.array([[1.0, 0.99, 0.1], [0.99, 1.0, 0.1], [0.1, 0.1, 1.0]])
    ranked = rank_candidates(relevance, sim, cands, caption_words=8, k=3)
    assert [i for i, _ in ranked] == [0, 2, 1]  # the near-duplicate comes last
    no_diversity = rank_candidates(relevance, sim, cands, caption_words=8, k=3, diversity=0.0)
    assert [i for i, _ in no_diversity] == [0, 1, 2]
    assert rank_candidates(np.zeros(0), np.zeros((0, 0)), [], 5) == []


# ------------------------------------------------------------------------------------------------
# refinement with the real all-MiniLM-L6-v2 weights
# ------------------------------------------------------------------------------------------------
REAL_CASES = [
    (PAPER_CAPTION, "dog"),
    ("a red coffee mug sitting on a wooden table next to a laptop", "mug"),
    ("there is a black cat sleeping on a grey sofa", "cat"),
    ("a white car parked in front of a brick house", "car"),
    ("an orange traffic cone on the side of the road", "cone"),
    ("A close-up of a yellow banana lying on a kitchen counter", "banana"),
    ("an elephant walking through tall grass in the savanna", "elephant"),
    ("the image shows a wooden chair next to a desk with a lamp", "chair"),
    ("two horses grazing in a field", "horses"),
    # BLIP's "there is ..." and "X on Y" captions named the place ("couch", "coffee on a table")
    ("a dog sitting on the couch", "dog"),
    ("there is a cup of coffee on a table", "cup"),
    ("there is a small dog that is sitting on the grass", "dog"),
]


@needs_minilm
@pytest.mark.parametrize("caption,head", REAL_CASES)
def test_refine_caption_real_minilm_keeps_the_object(caption, head):
    from fastsam2_ros.core.auto_prompt import refine_caption

    phrase = refine_caption(caption)
    assert head in phrase.split(), (caption, phrase)
    assert 1 <= len(phrase.split()) <= MAX_PHRASE_WORDS
    assert phrase in caption.lower()


@needs_minilm
def test_refine_caption_under_a_bf16_autocast():
    """The similarities came out in bf16 under a caller's CPU autocast, and numpy has no bf16."""
    import torch

    from fastsam2_ros.core.auto_prompt import refine_caption

    with torch.autocast("cpu", dtype=torch.bfloat16):
        phrase = refine_caption(PAPER_CAPTION)
    assert phrase and phrase in PAPER_CAPTION.lower()


@needs_minilm
def test_refine_caption_docstring_example_is_what_it_returns():
    import re

    from fastsam2_ros.core.auto_prompt import refine_caption

    example = re.search(r'-> "([^"]+)"', refine_caption.__doc__).group(1)
    assert refine_caption(PAPER_CAPTION) == example


@needs_minilm
def test_refiner_alternatives_are_diverse_and_empty_captions_give_no_phrase():
    from fastsam2_ros.core.auto_prompt import get_refiner, refine_caption

    ranked = get_refiner().rank("a red coffee mug sitting on a wooden table next to a laptop", k=3)
    phrases = [p for p, _ in ranked]
    assert phrases[0] == "red coffee mug" and len(set(phrases)) == 3
    assert any("table" in p for p in phrases[1:])  # MMR: the second pick is another thing
    assert refine_caption("") == "" and refine_caption("it is there.") == ""
    with pytest.raises(InputError):
        refine_caption(None)


@needs_minilm
def test_a_long_caption_is_ranked_on_what_the_encoder_reads_in_bounded_batches():
    """Every candidate used to go through MiniLM in one batch with the caption, padded to its 128
    tokens (a 6,000-character caption: 800 x 128 tokens, a minute and GBs), while the caption's
    embedding read only its first 128 tokens. Now the phrases come from those words, the caption
    is embedded alone and the candidates in batches of REFINER_BATCH, padded to their own length."""
    from fastsam2_ros.core.auto_prompt import REFINER_BATCH, REFINER_MAX_TOKENS, get_refiner

    refiner = get_refiner()
    nouns = [f"{a}{b}" for a in ("mug", "cup", "box", "pen") for b in ("ka", "lo", "mi", "su", "te")]
    caption = " ".join(f"a red {nouns[i % 20]} on the {nouns[(i + 7) % 20]}" for i in range(700))
    read = refiner.readable(caption)
    assert caption.startswith(read) and len(refiner.tokenizer.tokenize(read)) <= REFINER_MAX_TOKENS - 2
    assert len(refiner.tokenizer.tokenize(read + " mug")) > REFINER_MAX_TOKENS - 2
    shapes = []
    forward = refiner.model.forward

    def spy(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    refiner.model.forward = spy
    try:
        ranked = refiner.rank(caption, k=3)
    finally:
        del refiner.model.forward
    assert ranked and all(text.lower() in read.lower() for text, _ in ranked)
    assert shapes[0][0] == 1  # the caption alone
    assert all(rows <= REFINER_BATCH for rows, _ in shapes)
    assert all(cols <= 16 for _, cols in shapes[1:])  # short candidates, not padded to 128
    assert refiner.readable("a  red\tmug ") == "a red mug"
    # a caption without spaces (CJK) longer than the encoder reads: cut between characters (it
    # gave no phrase at all, where a short one did)
    cjk = "一只棕色的小狗" * 40
    read = refiner.readable(cjk)
    assert read and cjk.startswith(read)
    assert len(refiner.tokenizer.tokenize(read)) <= REFINER_MAX_TOKENS - 2


def test_a_caption_with_a_lone_surrogate_is_an_input_error_not_a_tokenizer_crash():
    from fastsam2_ros.core.auto_prompt import refine_caption

    with pytest.raises(InputError, match="caption contains lone surrogates"):
        refine_caption("a red \udc80 ball")


def test_minilm_is_unpacked_once_into_the_cache(tmp_path, monkeypatch):
    from fastsam2_ros.core.auto_prompt import minilm_model_dir

    monkeypatch.setenv("FASTSAM2_CACHE", str(tmp_path))
    d = minilm_model_dir()
    assert d.parent == tmp_path and (d / "model.safetensors").is_file()
    assert json.loads((d / "config.json").read_text())["model_type"] == "bert"
    stamp = (d / "model.safetensors").stat().st_mtime_ns
    assert minilm_model_dir() == d and (d / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [d.name]  # no temporary folder left behind


@needs_minilm
def test_a_cache_folder_minilm_cannot_be_unpacked_into_is_a_checkpoint_error(tmp_path, monkeypatch):
    """A FASTSAM2_CACHE that is a file (or read-only, or full) ended the first automatic prompt
    with a raw NotADirectoryError, which the node reported as an inference failure."""
    from fastsam2_ros.core.auto_prompt import minilm_model_dir

    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FASTSAM2_CACHE", str(blocker))
    with pytest.raises(CheckpointError, match=r"cannot unpack .* into .*cache .*FASTSAM2_CACHE"):
        minilm_model_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


@needs_minilm
def test_minilm_cache_is_one_folder_per_archive_content(tmp_path, monkeypatch):
    """The folder was keyed by the archive's path, size and mtime: every reinstall or new venv
    unpacked another 87 MB copy of the same model (35 copies, 3 GB, on one machine)."""
    import hashlib
    import shutil
    from importlib import metadata

    from fastsam2_ros.core.auto_prompt import MINILM_ARCHIVE, MINILM_DISTRIBUTION, minilm_model_dir

    monkeypatch.setenv("FASTSAM2_CACHE", str(tmp_path / "cache"))
    real = metadata.distribution(MINILM_DISTRIBUTION)
    first = minilm_model_dir()  # the installed package: its RECORD's sha256
    zip_path = pathlib.Path(real.locate_file(MINILM_ARCHIVE))
    assert first.name.endswith(hashlib.sha256(zip_path.read_bytes()).hexdigest()[:16])

    class Copy:  # the same archive installed elsewhere (another venv, a reinstall), no RECORD hash
        def __init__(self, root):
            (root / MINILM_ARCHIVE).parent.mkdir(parents=True)
            shutil.copy(zip_path, root / MINILM_ARCHIVE)
            self.root, self.files = root, [MINILM_ARCHIVE]

        def locate_file(self, f):
            return self.root / f

    for n in range(2):
        monkeypatch.setattr(metadata, "distribution", lambda name, d=Copy(tmp_path / f"site{n}"): d)
        assert minilm_model_dir() == first
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]


@needs_minilm
def test_concurrent_first_uses_leave_no_temporary_copy(tmp_path, monkeypatch):
    """The process that loses the rename removes its own copy (88 MB each were left behind)."""
    import zipfile

    from fastsam2_ros.core import auto_prompt

    monkeypatch.setenv("FASTSAM2_CACHE", str(tmp_path))
    real_extract = zipfile.ZipFile.extractall

    def extract_while_another_process_finishes(self, path, *a, **k):
        real_extract(self, path, *a, **k)
        winner = pathlib.Path(str(path).rsplit(".tmp", 1)[0])
        real_extract(self, winner, *a, **k)  # the other process renamed its copy first

    monkeypatch.setattr(zipfile.ZipFile, "extractall", extract_while_another_process_finishes)
    d = auto_prompt.minilm_model_dir()
    assert (d / "config.json").is_file() and [p.name for p in tmp_path.iterdir()] == [d.name]


@needs_transformers
def test_refiner_missing_model_is_a_clear_error(tmp_path):
    from fastsam2_ros.core.auto_prompt import refine_caption

    with pytest.raises(CheckpointError, match="not found"):
        refine_caption("a dog", model_path=str(tmp_path / "nope"))
    with pytest.raises(CheckpointError, match="sentence encoder"):
        refine_caption("a dog", model_path=str(tmp_path))  # a directory without a model


# ------------------------------------------------------------------------------------------------
# caption: a tiny random BLIP built from a transformers config (no download)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    if not HAS_TRANSFORMERS:
        pytest.skip("transformers is not installed")
    return make_tiny_blip(tmp_path_factory.mktemp("blip") / "dog")


@needs_transformers
def test_caption_stage_crop_in_string_out(tiny_blip, tmp_path):
    from fastsam2_ros.core.auto_prompt import RegionCaptioner

    cap = RegionCaptioner(str(tiny_blip), max_new_tokens=3)
    crop = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    assert cap.caption(crop) == "dog dog dog"  # generated ids decoded, special tokens dropped
    silent = RegionCaptioner(str(make_tiny_blip(tmp_path / "silent", favour=None)), max_new_tokens=3)
    assert silent.caption(crop) == ""
    with pytest.raises(InputError):
        cap.caption(np.zeros((4, 4), np.uint8))


@needs_transformers
def test_caption_stage_blip_prompt_conditions_the_caption_and_is_not_echoed(tiny_blip):
    """BLIP returns its prompt (auto_caption_prompt, e.g. "a photography of") before the caption,
    with [DEC] for the prompt's [CLS] and without its [SEP]: the prompt was kept, and became the
    object's text ("photography of a woman")."""
    from fastsam2_ros.core.auto_prompt import RegionCaptioner

    crop = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    for prompt in ("the table", " The  Table "):  # BLIP's tokenizer lower-cases
        cap = RegionCaptioner(str(tiny_blip), prompt=prompt, max_new_tokens=3)
        assert cap.caption(crop) == "dog dog dog"
    assert cap._after_prompt([5, 7, 12], [2, 12, 13, 3]) == [5, 7, 12]  # no echo: kept whole


def make_tiny_llava(path):
    """A randomly initialised LLaVA (CLIP vision tower + Llama decoder) with a chat template, whose
    generation config lets it say only "dog": a decoder-only chat VLM returns the prompt first."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    words = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "USER:", "ASSISTANT:", "dog", "describe",
             "the", "main", "object", "in", "this", "image", "one", "sentence."]
    vocab = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", pad_token="<pad>")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    template = ("{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}"
                "{% endfor %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                             crop_size={"height": 32, "width": 32}),
                          tokenizer=tok, chat_template=template, patch_size=8,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=32, patch_size=8,
                                       projection_dim=16),
        text_config=LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64,
                                num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
                                pad_token_id=3),
        image_token_index=vocab["<image>"], vision_feature_layer=-1,
        vision_feature_select_strategy="default")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(cfg)
    model.generation_config.suppress_tokens = [i for w, i in vocab.items() if w != "dog"]
    model.save_pretrained(str(path))
    proc.save_pretrained(str(path))
    return path


@needs_transformers
def test_caption_stage_chat_vlm_gets_an_instruction_and_loses_its_prompt(tmp_path):
    from fastsam2_ros.core.auto_prompt import RegionCaptioner

    cap = RegionCaptioner(str(make_tiny_llava(tmp_path / "llava")), max_new_tokens=3)
    assert cap.chat  # the processor's chat template is used, with CHAT_CAPTION_PROMPT
    crop = (np.random.default_rng(1).random((40, 30, 3)) * 255).astype(np.uint8)
    assert cap.caption(crop) == "dog dog dog"  # the echoed prompt ("USER: ... ASSISTANT:") is cut


@needs_transformers
def test_caption_model_missing_is_a_clear_error(tmp_path):
    from fastsam2_ros.core.auto_prompt import RegionCaptioner

    with pytest.raises(CheckpointError, match="caption model directory not found"):
        RegionCaptioner(str(tmp_path / "missing"))
    with pytest.raises(CheckpointError, match="processor"):
        RegionCaptioner(str(tmp_path))  # exists, holds no model


@needs_transformers
def test_a_checkpoint_of_another_head_is_refused_not_completed_at_random(tiny_blip, tmp_path):
    """BLIP's image-text retrieval model has the captioner's config: transformers built the
    captioner and initialised its whole text decoder at random, which then captioned noise (and
    a captioner given as the refiner ran with a random text model)."""
    from fastsam2_ros.core.auto_prompt import PhraseRefiner, RegionCaptioner

    itm = make_tiny_blip_head(tiny_blip, tmp_path / "blip-itm", "BlipForImageTextRetrieval")
    with pytest.raises(CheckpointError, match=r"auto_caption_model\) lacks \d+ weight.*text_decoder"
                       ) as info:
        RegionCaptioner(str(itm))
    assert str(itm) in str(info.value)
    with pytest.raises(CheckpointError, match=r"auto_refiner_model\) lacks \d+ weight") as info:
        PhraseRefiner(str(tiny_blip))
    assert str(tiny_blip) in str(info.value)


@needs_transformers
def test_a_refiner_model_that_embeds_no_text_is_refused_when_loaded(tiny_blip, tmp_path):
    """A complete model that is no text encoder (BLIP's image-text model wants an image too)
    loaded, and every automatic prompt then failed with transformers' ValueError."""
    from fastsam2_ros.core.auto_prompt import PhraseRefiner

    folder = make_tiny_blip_head(tiny_blip, tmp_path / "blip-model", "BlipModel")
    with pytest.raises(CheckpointError, match=r"auto_refiner_model\) is not a sentence encoder.*"
                       "ValueError") as info:
        PhraseRefiner(str(folder))
    assert str(folder) in str(info.value)


def test_a_sentence_encoder_saved_without_berts_pooler_is_a_refiner(tmp_path):
    """The missing-weights check refused encoders saved without BERT's pooler (e.g. from a
    masked-language-model head): the refiner mean-pools and never runs the pooler."""
    import shutil

    import transformers

    from fastsam2_ros.core.auto_prompt import PhraseRefiner, minilm_model_dir

    source, folder = minilm_model_dir(), tmp_path / "encoder_without_pooler"
    vocab = transformers.AutoTokenizer.from_pretrained(str(source)).vocab_size
    config = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64)
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(str(folder))
    for f in source.iterdir():  # its tokenizer
        if f.name.startswith(("vocab", "tokenizer", "special_tokens")):
            shutil.copy(f, folder / f.name)
    assert tuple(PhraseRefiner(str(folder)).embed(["a small dog"]).shape) == (1, 32)


# ------------------------------------------------------------------------------------------------
# proposal sources
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rpn_weights(tmp_path_factory):
    """A random torchvision Faster R-CNN (MobileNetV3-FPN) state dict: the real format."""
    return save_random_rpn(tmp_path_factory.mktemp("rpn") / "frcnn.pth")


def test_rpn_proposals_from_weights_by_path(rpn_weights, video):
    from fastsam2_ros.core.auto_prompt import RpnProposer

    frames, _, _ = video
    rpn = RpnProposer(str(rpn_weights), max_proposals=20, min_objectness=0.0)
    assert rpn.architecture == "fasterrcnn_mobilenet_v3_large_fpn"
    props = rpn.propose(frames[0])
    assert 0 < len(props) <= 20
    h, w = frames[0].shape[:2]
    for p in props:
        assert p.mask.shape == (h, w) and p.mask.any() and 0.0 <= p.quality <= 1.0
        x0, y0, x1, y1 = p.box
        assert 0 <= x0 < x1 < w and 0 <= y0 < y1 < h
    strict = RpnProposer(str(rpn_weights), min_objectness=1.0)
    assert strict.propose(frames[0]) == []


def test_rpn_weights_without_batchnorm_counters_load(rpn_weights, tmp_path):
    """torchvision builds its pretrained detectors with FrozenBatchNorm2d: their state dicts have
    no ``num_batches_tracked``; every other backbone/RPN key is still required."""
    import torch

    from fastsam2_ros.core.auto_prompt import RpnProposer

    state = torch.load(str(rpn_weights), weights_only=True)
    frozen = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(frozen) < len(state)
    torch.save(frozen, tmp_path / "frozen.pth")
    rpn = RpnProposer(str(tmp_path / "frozen.pth"))
    assert rpn.architecture == "fasterrcnn_mobilenet_v3_large_fpn"
    loaded = rpn.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in frozen.items() if k.startswith(("backbone.", "rpn.")))
    del frozen["rpn.head.cls_logits.weight"]
    torch.save(frozen, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="match none"):
        RpnProposer(str(tmp_path / "short.pth"))


def test_rpn_weights_missing_or_wrong_are_clear_errors(tmp_path):
    import torch

    from fastsam2_ros.core.auto_prompt import RpnProposer

    with pytest.raises(CheckpointError, match="auto_rpn_weights"):
        RpnProposer("")
    with pytest.raises(CheckpointError, match="not found"):
        RpnProposer(str(tmp_path / "none.pth"))
    other = tmp_path / "other.pth"
    torch.save({"backbone.body.conv1.weight": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="match none"):
        RpnProposer(str(other))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x80not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        RpnProposer(str(junk))
    html = tmp_path / "failed_download.pth"  # torch.load would advise unpickling it unsafely
    html.write_text("<html><body>404 Not Found</body></html>\n")
    with pytest.raises(CheckpointError, match="is a text file") as err:
        RpnProposer(str(html))
    assert "weights_only" not in str(err.value)


def test_rpn_weights_with_nan_are_refused_when_loaded(rpn_weights, tmp_path):
    """NaN weights used to load, and the automatic prompt then blamed the thresholds ("no
    object-like region")."""
    import torch

    from fastsam2_ros.core.auto_prompt import RpnProposer

    state = torch.load(rpn_weights, weights_only=True)
    key = next(k for k in state if k.startswith("rpn.head.cls_logits.weight"))
    state[key] = torch.full_like(state[key], float("nan"))
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match="NaN or infinite.*cls_logits"):
        RpnProposer(str(tmp_path / "nan.pth"))


@pytest.fixture(scope="module")
def small_model():
    from fastsam2_ros.core.models import build_predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_predictor(TrackerConfig(model_cfg="tiny", allow_random_weights=True,
                                             image_size=128, device="cpu"))


def test_sam2_generator_runs_on_the_tracker_model_at_a_small_size(small_model, video):
    """sam2's image predictor assumes 1024 px feature grids; ours fixes them for any size."""
    from fastsam2_ros.core.auto_prompt import Sam2Proposer

    frames, _, _ = video
    gen = Sam2Proposer(small_model, points_per_side=4, crop_layers=0, min_pred_iou=0.0, min_stability=0.0)
    assert gen.generator.predictor._bb_feat_sizes == [(32, 32), (16, 16), (8, 8)]
    assert len(gen.generator.point_grids) == 1 and len(gen.generator.point_grids[0]) == 16
    props = gen.propose(frames[0])
    assert 0 < len(props) <= 16 * 3  # bounded by points_per_side^2 x 3 masks per point
    for p in props:
        assert p.mask.shape == frames[0].shape[:2] and p.mask.dtype == bool and p.source == "sam2"
        assert np.isfinite(p.quality)


def test_sam2_proposals_are_dtype_safe_under_bf16_autocast(small_model, video):
    """On CUDA the generator runs under bf16 autocast; CPU autocast makes the same bf16 tensors
    (a .numpy() on one raises), so this checks the conversions without a GPU."""
    import torch

    from fastsam2_ros.core.auto_prompt import Sam2Proposer

    frames, _, _ = video
    gen = Sam2Proposer(small_model, points_per_side=4, min_pred_iou=0.0, min_stability=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        props = gen.propose(frames[0])
    assert props and all(p.mask.dtype == bool and isinstance(p.quality, float) for p in props)


def test_sam2_proposals_with_crop_layers_on_a_very_wide_frame(small_model):
    """Shrunk to 640 px on its long side, an 8 x 4000 frame was 1 px high: sam2's crop boxes were
    empty and a TorchScript RuntimeError came out of the generator."""
    from fastsam2_ros.core.auto_prompt import Sam2Proposer

    frame = (np.random.default_rng(0).random((8, 4000, 3)) * 255).astype(np.uint8)
    gen = Sam2Proposer(small_model, points_per_side=2, crop_layers=1, min_pred_iou=0.0,
                       min_stability=0.0)
    assert all(p.mask.shape == (8, 4000) for p in gen.propose(frame))


# ------------------------------------------------------------------------------------------------
# tracker.auto_prompt end to end (random SAM 2, random RPN: plumbing only)
# ------------------------------------------------------------------------------------------------
def auto_cfg(rpn_weights, **kw):
    base = dict(model_cfg="tiny", allow_random_weights=True, image_size=128, device="cpu",
                mc_passes=0, text_mode="none", auto_proposal_source="rpn",
                auto_rpn_weights=str(rpn_weights), auto_min_objectness=0.0)
    base.update(kw)
    return TrackerConfig(**base)


def make_tracker(cfg, model):
    from fastsam2_ros.core.tracker import StreamingTracker

    return StreamingTracker(cfg, model=model)


def test_auto_prompt_phrase_free_start_and_stats_every_frame(rpn_weights, small_model, video, caplog):
    frames, _, _ = video
    tracker = make_tracker(auto_cfg(rpn_weights), small_model)
    with pytest.raises(InputError, match="pass image="):
        tracker.auto_prompt(1)  # no frame yet
    with caplog.at_level("INFO", logger="fastsam2_ros.core.auto_prompt"):
        res = tracker.auto_prompt(1, image=frames[0])
    ap = res.auto_prompt
    assert tracker.object_ids == [1] and res.object_ids == [1]
    assert ap.obj_id == 1 and ap.source == "rpn" and ap.caption is None and ap.phrase is None
    assert not ap.text_used and any("phrase-free" in n for n in ap.notes)
    assert ap.mask[ap.click[1], ap.click[0]]  # the click lies on the region
    assert res.stats.auto_prompted == [1] and res.stats.auto_phrases == {1: ""}
    assert ap.timings_ms["proposals"] > 0 and ap.timings_ms["caption"] == 0.0
    assert res.stats.stage_ms["auto_proposals"] == ap.timings_ms["proposals"]
    assert res.stats.stage_ms["total"] >= ap.timings_ms["proposals"]
    assert sum("phrase-free" in r.getMessage() for r in caplog.records) == 1
    for f in frames[1:3]:
        st = tracker.track(f).stats
        assert st.auto_phrases == {1: ""} and st.auto_prompted == []
        assert "auto_proposals" not in st.stage_ms  # once per object, not per frame
    with pytest.raises(InputError, match="already tracked"):
        tracker.auto_prompt(1)
    # a user-prompted object is not reported as auto-prompted
    res = tracker.add_prompt(2, points=[[10, 10]], labels=[1])
    assert res.stats.auto_phrases == {1: ""}
    tracker.reset()
    tracker.auto_prompt(5, image=frames[0])  # the phrase-free note is logged once per tracker
    assert sum("phrase-free" in r.getMessage() for r in caplog.records) == 1


def test_releasing_the_automatic_prompt_frees_the_rpn_model_without_a_gc_pass(rpn_weights,
                                                                            small_model, video):
    """The RPN's patched filter_proposals closed over its proposer (proposer -> model -> rpn ->
    closure -> proposer): release() left the Faster R-CNN to a cyclic GC pass, after
    Tracker.release had emptied the CUDA cache. Tracker.release also releases a prompter that
    someone still holds."""
    import gc
    import weakref

    from fastsam2_ros.core.auto_prompt import AutoPrompter

    frames, _, _ = video
    prompter = AutoPrompter(auto_cfg(rpn_weights), None)
    assert prompter.proposer().propose(frames[0])  # the scores are still kept
    model = weakref.ref(prompter.proposer().model)
    tracker = make_tracker(auto_cfg(rpn_weights), small_model)
    tracker.auto_prompt(1, image=frames[0])
    held = tracker._auto_prompter
    tracker_rpn = weakref.ref(held.proposer().model)
    gc.disable()
    try:
        prompter.release()
        tracker.release()
        assert model() is None and tracker_rpn() is None
    finally:
        gc.enable()


def test_auto_prompt_failure_leaves_the_tracker_unchanged(rpn_weights, small_model, video):
    frames, _, _ = video
    tracker = make_tracker(auto_cfg(rpn_weights, auto_min_objectness=1.0), small_model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    before = tracker.memory_bank_size()
    with pytest.raises(InputError, match="no object-like region"):
        tracker.auto_prompt(2)
    assert tracker.object_ids == [1] and tracker.memory_bank_size() == before
    tracker.track(frames[1])
    full = make_tracker(auto_cfg(rpn_weights, max_objects=1), small_model)
    full.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    with pytest.raises(InputError, match="max_objects"):
        full.auto_prompt(2)


def test_auto_prompt_with_a_new_frame_tracks_existing_objects_first(rpn_weights, small_model, video):
    frames, _, _ = video
    tracker = make_tracker(auto_cfg(rpn_weights), small_model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    try:
        res = tracker.auto_prompt(2, image=frames[1])
    except AutoPromptFailed as exc:  # random weights: object 1's mask may cover every proposal
        assert "no object-like region" in str(exc) and exc.tracked.frame_index == 1
        assert tracker.frame_index == 1 and tracker.object_ids == [1]
        return
    assert tracker.frame_index == 1 and res.object_ids == [1, 2]
    assert res.stats.stage_ms["encoder"] > 0 and res.stats.auto_prompted == [2]


def test_a_failed_auto_prompt_hands_back_the_frame_it_tracked(rpn_weights, small_model, video):
    """With objects tracked, auto_prompt(image=) tracks the frame before it looks for a region:
    when none is found the state has moved on, and the error carries that frame's result (it
    used to be lost, and a caller tracking the frame again tracked it twice)."""
    frames, _, _ = video
    tracker = make_tracker(auto_cfg(rpn_weights, auto_min_objectness=1.0), small_model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    with pytest.raises(AutoPromptFailed, match="no object-like region") as info:
        tracker.auto_prompt(2, image=frames[1])
    tracked = info.value.tracked
    assert tracked.frame_index == tracker.frame_index == 1 and tracked.object_ids == [1]
    assert tracked.masks[1].shape == frames[1].shape[:2]
    with pytest.raises(InputError, match="no object-like region") as info:
        tracker.auto_prompt(2)  # on the current frame: nothing tracked, the state is unchanged
    assert not isinstance(info.value, AutoPromptFailed) and tracker.frame_index == 1


class _BrokenProposer:
    def propose(self, image):
        raise RuntimeError("a bug in a stage")


def test_any_failure_after_the_frame_was_tracked_hands_the_frame_back(rpn_weights, small_model, video):
    """Only the core's own errors were wrapped: a model's ValueError or RuntimeError lost the
    tracked frame's result (API.md promises AutoPromptFailed with .tracked)."""
    from fastsam2_ros.core.auto_prompt import AutoPrompter

    frames, _, _ = video
    cfg = auto_cfg(rpn_weights)
    tracker = make_tracker(cfg, small_model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    tracker._auto_prompter = AutoPrompter(cfg, small_model)
    tracker._auto_prompter._proposer = _BrokenProposer()
    with pytest.raises(AutoPromptFailed, match="RuntimeError: a bug in a stage") as info:
        tracker.auto_prompt(2, image=frames[1])
    assert isinstance(info.value.__cause__, RuntimeError)
    assert info.value.tracked.frame_index == tracker.frame_index == 1
    assert tracker.object_ids == [1]
    with pytest.raises(RuntimeError, match="a bug"):  # nothing tracked: raised as it is
        tracker.auto_prompt(2)


class _FailingCaptioner:
    def __init__(self, exc):
        self.exc = exc

    def caption(self, crop):
        raise self.exc


class _OneWordRefiner:
    def rank(self, caption):
        return [(caption, 1.0)]


@pytest.mark.parametrize("exc", [IndexError("index out of range in self"), KeyError("pad"),
                                 RuntimeError("CUDA out of memory")])
def test_any_caption_model_error_gives_a_phrase_free_start(exc):
    """transformers' generate raises IndexError past the model's positions (auto_caption_max_tokens
    up to 512); only RuntimeError/ValueError/TypeError used to fall back, the rest stopped the start."""
    from fastsam2_ros.core.auto_prompt import AutoPrompter
    from fastsam2_ros.core.stats import StageTimer

    prompter = AutoPrompter(TrackerConfig(device="cpu", auto_caption_model="/some/blip"), None)
    prompter._captioner, prompter._refiner = _FailingCaptioner(exc), _OneWordRefiner()
    caption, phrase, _, notes = prompter.describe(np.zeros((20, 20, 3), np.uint8), StageTimer("cpu"))
    assert caption is None and phrase is None
    assert notes == [f"caption model failed: {exc}"]


def test_a_phrase_longer_than_a_text_prompt_is_cut_to_fit():
    """A caption without spaces (a CJK captioner) is one long "word"; add_prompt refused it after
    every stage had run, and nothing started."""
    from fastsam2_ros.core.auto_prompt import AutoPrompter
    from fastsam2_ros.core.stats import StageTimer

    class LongCaptioner:
        def caption(self, crop):
            return "猫" * 325

    prompter = AutoPrompter(TrackerConfig(device="cpu", auto_caption_model="/some/blip",
                                          max_text_length=300), None)
    prompter._captioner, prompter._refiner = LongCaptioner(), _OneWordRefiner()
    caption, phrase, keyphrases, notes = prompter.describe(np.zeros((20, 20, 3), np.uint8),
                                                           StageTimer("cpu"))
    assert len(caption) == 325 and phrase == "猫" * 300 and keyphrases == ["猫" * 325]
    assert any("cut to max_text_length" in n for n in notes)


CJK_CAPTION = "一只戴着红色项圈的棕色小狗正坐在客厅里的木桌上看着镜头旁边还有一个杯子"  # 88 CLIP tokens


class _FixedCaptioner:
    def __init__(self, caption):
        self.text = caption

    def caption(self, crop):
        return self.text


def describe_with(caption, **cfg):
    from fastsam2_ros.core.auto_prompt import AutoPrompter
    from fastsam2_ros.core.stats import StageTimer

    prompter = AutoPrompter(TrackerConfig(device="cpu", auto_caption_model="/some/blip", **cfg), None)
    prompter._captioner, prompter._refiner = _FixedCaptioner(caption), _OneWordRefiner()
    return prompter.describe(np.zeros((20, 20, 3), np.uint8), StageTimer("cpu"))


def test_a_phrase_over_the_clip_context_is_cut_to_fit_when_it_becomes_the_text():
    """A caption without spaces fit max_text_length but not CLIP's 75 tokens: add_prompt refused
    it ("shorten it", a text nobody wrote) and nothing started."""
    from fastsam2_ros.core.clip_text import clip_token_count, clip_tokenizer

    _, phrase, keyphrases, notes = describe_with(CJK_CAPTION, text_mode="clip_ridge",
                                                 allow_random_weights=True)
    assert keyphrases == [CJK_CAPTION] and phrase and CJK_CAPTION.startswith(phrase)
    assert clip_token_count(clip_tokenizer("ViT-B-16"), phrase) <= 75
    assert any("CLIP text encoder's context (75 tokens)" in n for n in notes)
    assert describe_with(CJK_CAPTION)[1] == CJK_CAPTION  # only reported (no CLIP): not cut


def test_a_phrase_no_text_prompt_may_be_gives_a_phrase_free_start():
    caption, phrase, _, notes = describe_with("\u200b\u200b")  # only invisible characters
    assert caption == "\u200b\u200b" and phrase is None
    assert any("no valid text prompt" in n and "phrase-free" in n for n in notes)


def test_auto_prompt_starts_with_a_phrase_cut_to_the_clip_context(rpn_weights, small_model, video):
    from fastsam2_ros.core.auto_prompt import AutoPrompter

    frames, _, _ = video
    tracker = make_tracker(auto_cfg(rpn_weights, text_mode="clip_ridge",
                                    auto_caption_model="/"), small_model)  # any folder
    tracker._auto_prompter = AutoPrompter(tracker.cfg, tracker.model)
    tracker._auto_prompter._captioner = _FixedCaptioner(CJK_CAPTION)
    tracker._auto_prompter._refiner = _OneWordRefiner()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = tracker.auto_prompt(1, image=frames[0])
    assert res.object_ids == [1] and res.frame_index == 0 and res.auto_prompt.text_used
    assert CJK_CAPTION.startswith(res.auto_prompt.phrase) and tracker.objects[1].text == res.auto_prompt.phrase


def test_the_stages_run_on_the_trackers_device_without_a_sam2_model(monkeypatch):
    """The eval's text variants build the prompter without SAM 2: the caption model ran on the
    CPU also with --device cuda."""
    import torch

    from fastsam2_ros.core.auto_prompt import AutoPrompter

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert AutoPrompter(TrackerConfig(device="auto"), None).device == "cuda"
    assert AutoPrompter(TrackerConfig(device="cpu"), None).device == "cpu"


@needs_minilm
def test_auto_prompt_caption_and_phrase_become_the_objects_text(rpn_weights, small_model, video,
                                                                tmp_path):
    """Tiny BLIP that says "dog" + real MiniLM: the phrase is the object's text (random CLIP)."""
    frames, _, _ = video
    blip = make_tiny_blip(tmp_path / "blip")
    cfg = auto_cfg(rpn_weights, text_mode="clip_ridge", auto_caption_model=str(blip),
                   auto_caption_max_tokens=1)
    tracker = make_tracker(cfg, small_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = tracker.auto_prompt(3, image=frames[0])
    ap = res.auto_prompt
    assert ap.caption == "dog" and ap.phrase == "dog" and ap.keyphrases[0] == "dog"
    assert ap.text_used and res.stats.text_mode == "clip_ridge"
    assert res.stats.auto_phrases == {3: "dog"}
    assert ap.timings_ms["caption"] > 0 and ap.timings_ms["refinement"] > 0
    assert tracker.track(frames[1]).stats.auto_phrases == {3: "dog"}
    # the same phrase without CLIP weights: reported, not used as the router's prior
    plain = make_tracker(auto_cfg(rpn_weights, auto_caption_model=str(blip),
                                  auto_caption_max_tokens=1), small_model)
    ap2 = plain.auto_prompt(1, image=frames[0]).auto_prompt
    assert ap2.phrase == "dog" and not ap2.text_used and any("text relevance is off" in n for n in ap2.notes)


@needs_minilm
def test_failing_or_silent_caption_model_falls_back_to_a_phrase_free_start(rpn_weights, small_model,
                                                                          video, tmp_path):
    frames, _, _ = video
    silent = make_tiny_blip(tmp_path / "silent", favour=None)
    tracker = make_tracker(auto_cfg(rpn_weights, auto_caption_model=str(silent)), small_model)
    res = tracker.auto_prompt(1, image=frames[0])
    assert res.auto_prompt.caption == "" and res.auto_prompt.phrase is None
    assert res.stats.auto_phrases == {1: ""}
    broken = make_tracker(auto_cfg(rpn_weights, auto_caption_model=str(silent)), small_model)

    def fail(crop):
        raise RuntimeError("out of memory")

    broken.auto_prompt(1, image=frames[0])
    broken._auto_prompter.captioner().caption = fail
    broken.reset()  # the loaded stages stay
    res = broken.auto_prompt(2, image=frames[0])
    assert res.auto_prompt.phrase is None and any("out of memory" in n for n in res.auto_prompt.notes)


def test_missing_caption_model_is_a_clear_error_and_nothing_starts(rpn_weights, small_model, video,
                                                                    tmp_path):
    if not HAS_TRANSFORMERS:
        pytest.skip("transformers is not installed")
    frames, _, _ = video
    with pytest.raises(CheckpointError, match="caption model directory not found"):
        make_tracker(auto_cfg(rpn_weights, auto_caption_model=str(tmp_path / "none")), small_model)
    # a folder that goes after the tracker is built (a model store unmounted) fails at the prompt
    folder = tmp_path / "gone"
    folder.mkdir()
    tracker = make_tracker(auto_cfg(rpn_weights, auto_caption_model=str(folder)), small_model)
    folder.rmdir()
    with pytest.raises(CheckpointError, match="caption model directory not found"):
        tracker.auto_prompt(1, image=frames[0])
    assert tracker.object_ids == []
    # with an object tracked, the new frame used to be tracked first and then lost with the error
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    with pytest.raises(CheckpointError, match="caption model directory not found"):
        tracker.auto_prompt(2, image=frames[1])
    assert tracker.frame_index == 0 and tracker.object_ids == [1]


@pytest.mark.parametrize("field,value", [
    ("auto_proposal_source", "yolo"), ("auto_points_per_side", 0), ("auto_points_per_side", 65),
    ("auto_crop_layers", 3), ("auto_min_pred_iou", 1.5), ("auto_min_stability", -0.1),
    ("auto_min_objectness", 2.0), ("auto_caption_max_tokens", 0)])
def test_auto_config_is_validated(field, value):
    with pytest.raises(InputError, match=field):
        TrackerConfig(**{field: value})
