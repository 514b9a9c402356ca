"""``fastsam2-eval``: score DAVIS predictions, run the tracker in several modes, make a synthetic set.

Examples::

    fastsam2-eval synth --out /tmp/synth --sequences 3 --frames 12 --size 320x240
    fastsam2-eval run --dataset /tmp/synth --random-weights --image-size 256 \\
        --modes official,dense,pruned --keep-ratios 0.3,0.5 --out out/eval-synth
    fastsam2-eval run --dataset DAVIS --imageset val --checkpoint sam2.1_hiera_tiny.pt --model tiny
    fastsam2-eval run --frames clip.mp4 --first-mask first.png --checkpoint ... --modes dense,pruned
    fastsam2-eval run --dataset DAVIS --checkpoint ... --prompt auto --config tracker.yaml
    fastsam2-eval run --dataset DAVIS --checkpoint ... --text-prompts texts.json \
        --text-variants user,auto,vague,verbose --config tracker.yaml   # paper Table 6
    fastsam2-eval score --gt DAVIS --pred out/eval/pruned_0.30 --json scores.json

Errors in the inputs end with exit status 2 and one line naming the file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

from ..core.errors import FastSam2Error, InputError
from .davis_io import DEFAULT_RESOLUTION

LOG = logging.getLogger("fastsam2_ros.eval")


def _floats(text: str) -> List[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one number")
    return vals


def _names(text: str) -> List[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _lower_names(text: str) -> List[str]:
    """Names taken in any case (as --modes): every later step compares them in lower case."""
    return [v.lower() for v in _names(text)]


#: Objects ``--prompt auto`` starts per sequence when --auto-objects is not given.
DEFAULT_AUTO_OBJECTS = 1

def add_max_frames_option(parser: argparse.ArgumentParser) -> None:
    """``--max-frames`` of run and score, one definition: the masks of ``run --max-frames N`` are
    re-scored with ``score --max-frames N``, which reads the sequences the same way."""
    parser.add_argument("--max-frames", type=int,
                        help="use only the first N frames of each sequence (>= 1; score: those "
                             "that run --max-frames N tracked)")


def check_max_frames(max_frames: Optional[int]) -> None:
    """Refused up front: 0 leaves no frame to track or score."""
    if max_frames is not None and max_frames < 1:
        raise InputError("--max-frames must be >= 1")


IMAGESET_HELP = ("sequences of an image set: NAME (ImageSets/<newest year that has NAME>/NAME.txt, "
                 "e.g. val), YEAR/NAME (e.g. 2016/val) or a .txt file; not with --sequences")


def build_parser() -> argparse.ArgumentParser:
    from .runner import DEFAULT_KEEP_RATIOS, Protocol

    p = argparse.ArgumentParser(prog="fastsam2-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score predictions against ground truth (DAVIS 2017 conventions)")
    s.add_argument("--gt", required=True, help="ground truth: DAVIS root or folder of sequence folders")
    s.add_argument("--pred", required=True, help="predictions: DAVIS root or folder of sequence folders")
    s.add_argument("--json", help="write the scores as JSON here")
    s.add_argument("--sequences", type=_names, help="comma-separated sequences (default: all GT sequences)")
    s.add_argument("--imageset", help=IMAGESET_HELP + " of --gt")
    s.add_argument("--resolution", help=f"resolution folder of --gt (default {DEFAULT_RESOLUTION} "
                   "where it has resolution folders)")
    s.add_argument("--all-frames", action="store_true",
                   help="also score the first and last frame (NOT the DAVIS protocol)")
    s.add_argument("--objects", choices=("first", "all"), default="first",
                   help="first: ids of the first annotated frame (DAVIS); all: also objects that "
                        "appear later (not the DAVIS protocol)")
    s.add_argument("--per-frame", action="store_true", help="include per-frame J/F in the --json file")
    add_max_frames_option(s)
    s.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("run", help="run the tracker (official/dense/pruned) and report accuracy and cost")
    src = r.add_argument_group("input (one of)")
    src.add_argument("--dataset", help="DAVIS-layout dataset root (JPEGImages/ + Annotations/)")
    src.add_argument("--frames", help="folder of images, video file or rosbag2 (needs --first-mask)")
    src.add_argument("--first-mask", help="label PNG of the first frame (object ids) for --frames")
    src.add_argument("--topic", help="image topic of a rosbag (default: its only image topic)")
    r.add_argument("--sequences", type=_names, help="comma-separated sequences of --dataset")
    r.add_argument("--imageset", help=IMAGESET_HELP + " of --dataset")
    r.add_argument("--resolution", help=f"resolution folder of --dataset (default {DEFAULT_RESOLUTION} "
                   "where it has resolution folders)")
    add_max_frames_option(r)
    m = r.add_argument_group("model")
    w = m.add_mutually_exclusive_group()
    w.add_argument("--checkpoint", help="official SAM 2 / 2.1 checkpoint (.pt)")
    w.add_argument("--random-weights", action="store_true",
                   help="random weights (smoke tests: accuracy is meaningless)")
    m.add_argument("--model", help="tiny|small|base_plus|large or a sam2 config name")
    m.add_argument("--image-size", type=int, help="SAM 2 input side (default from config: 1024)")
    m.add_argument("--device", help="auto|cpu|cuda|cuda:N")
    m.add_argument("--config", help="tracker parameter YAML (config/tracker.yaml); flags override it")
    r.add_argument("--modes", type=_names, default=["official", "dense", "pruned"],
                   help="comma-separated: official,dense,pruned (default: all)")
    r.add_argument("--keep-ratios", type=_floats,
                   help="keep ratios of the pruned mode (default "
                        f"{','.join(map(str, DEFAULT_KEEP_RATIOS))}; with the pruned mode only)")
    r.add_argument("--refine", action=argparse.BooleanOptionalAction, default=False,
                   help="simulated refinement clicks when a frame's J&F < --refine-threshold")
    with_refine = "; with --refine only"
    r.add_argument("--refine-threshold", type=float,
                   help=f"J&F below which a frame gets a correction round (default "
                        f"{Protocol.refine_threshold}{with_refine})")
    r.add_argument("--max-rounds", type=int,
                   help=f"refinement rounds per sequence (default {Protocol.max_rounds}{with_refine})")
    r.add_argument("--clicks-per-round", type=int,
                   help=f"clicks per correction round (default {Protocol.clicks_per_round}{with_refine})")
    r.add_argument("--text-prompts", help='JSON {"seq": {"obj_id": "text"}} passed with the clicks')
    r.add_argument("--prompt", choices=("click", "auto"), default="click",
                   help="click: one click per GT object (paper protocol); auto: the automatic prompt "
                        "(proposal -> caption -> phrase, auto_* parameters of --config) on the first "
                        "frame, no ground truth used to prompt; objects are matched to GT ids to score")
    r.add_argument("--auto-objects", type=int,
                   help=f"objects started per sequence (default {DEFAULT_AUTO_OBJECTS}; with "
                        "--prompt auto only)")
    r.add_argument("--text-variants", type=_lower_names, default=[],
                   help="comma-separated user,auto,vague,verbose: run the streaming modes once per "
                        "text (same clicks) and report J&F per variant (paper Table 6); auto/vague/"
                        "verbose need auto_caption_model")
    r.add_argument("--out", default="out/eval", help="output folder (predictions, report)")
    r.add_argument("--json", help="report JSON (default OUT/report.json)")
    r.add_argument("--markdown", help="markdown table (default OUT/report.md)")
    r.add_argument("--plot", help="plot: .png, .pdf or .svg (default OUT/report.png)")
    r.add_argument("--save-masks", action=argparse.BooleanOptionalAction, default=True,
                   help="write predicted label PNGs under OUT/<mode>/<seq>/")
    r.add_argument("--warmup", type=int, default=2, help="untimed warm-up frames per mode")
    r.add_argument("--no-progress", action="store_true")

    y = sub.add_parser("synth", help="write a small synthetic DAVIS-layout dataset")
    y.add_argument("--out", required=True)
    y.add_argument("--sequences", type=int, default=3)
    y.add_argument("--frames", type=int, default=12)
    y.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    y.add_argument("--objects", type=int, default=2, help="objects per sequence")
    y.add_argument("--seed", type=int, default=0)
    return p


# --------------------------------------------------------------------------------------------------
def check_output_file(path: Optional[str], flag: str, makes_folders: bool = True,
                      suffixes: Sequence[str] = ()) -> None:
    """Fail before any work when an output file cannot be written (a folder is in the way, the
    parent is a file, its folder is missing and the writer does not make folders, or the writer
    cannot make a file of that type: ``suffixes``)."""
    if not path:
        return
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)):  # (Path drops a trailing "/": "x/" is x)
        raise InputError(f"{flag} {path} is a folder; give a file name")
    if suffixes and p.suffix.lower() not in suffixes:
        raise InputError(f"{flag} {p}: give a file name ending in {' / '.join(suffixes)}")
    check_output_folder(p.parent, flag, of=p)
    if not makes_folders and not p.parent.is_dir():
        raise InputError(f"{flag} {p}: folder {p.parent} does not exist")


def check_output_folder(path, flag: str, of: Optional[Path] = None) -> None:
    """Fail before any work when ``path`` (or a folder above it) is a file, so the folder cannot
    be made; ``of``: the output file the message names instead."""
    p = Path(path)
    blocker = next((q for q in (p, *p.parents) if q.exists()), None)
    if blocker is not None and not blocker.is_dir():
        if of is None and blocker == p:
            raise InputError(f"{flag} {p} is a file, not a folder")
        raise InputError(f"{flag} {of or p}: {blocker} is a file, not a folder")
    # a read-only file system, sysfs, a folder of another user: found now, not after the run
    if blocker is not None:
        try:  # (os.access says yes to root on /sys, where no file can be made)
            fd, probe = tempfile.mkstemp(dir=blocker, prefix=".fastsam2-write-test-")
        except OSError as exc:
            raise InputError(f"{flag} {of or p}: cannot write in {blocker} ({exc.strerror})") from None
        os.close(fd)
        os.unlink(probe)
    if of is not None and of.exists() and not os.access(of, os.W_OK):
        raise InputError(f"{flag} {of} exists and is not writable")


def cmd_score(args) -> int:
    from .report import score_report, write_json
    from .scoring import format_scores, score_folders

    if args.per_frame and not args.json:
        raise InputError("--per-frame adds per-frame J/F to the --json file; give --json too")
    check_max_frames(args.max_frames)
    check_output_file(args.json, "--json")
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        progress = lambda it: tqdm(list(it), desc="scoring", unit="seq")  # noqa: E731
    result = score_folders(args.gt, args.pred, sequences=args.sequences, resolution=args.resolution,
                           drop_first_last=not args.all_frames, imageset=args.imageset,
                           progress=progress, objects=args.objects, max_frames=args.max_frames)
    print(format_scores(result))
    if args.json:
        path = write_json(args.json, score_report(result, args.gt, args.pred, args.per_frame))
        print(f"wrote {path}")
    return 0


def cmd_synth(args) -> int:
    from .synthetic import generate_dataset

    check_output_folder(args.out, "--out")
    out = generate_dataset(args.out, sequences=args.sequences, frames=args.frames, size=args.size,
                           objects=args.objects, seed=args.seed)
    print(f"wrote synthetic DAVIS-layout dataset to {out} ({args.sequences} sequences x "
          f"{args.frames} frames, {args.size}, {args.objects} objects)")
    return 0


def load_text_prompts(path: Optional[str], max_length: int,
                      clip_model: Optional[str] = None) -> Dict[str, Dict[int, str]]:
    """``{seq: {obj_id: text}}`` from JSON; every text is checked as the tracker will check it
    (``validate_text`` with the tracker's ``max_text_length``, and CLIP's context when the texts
    go through open_clip ``clip_model``), so a bad one is refused before any mode runs, naming
    the file, the sequence and the object."""
    from ..core.clip_text import clip_context_error, clip_tokenizer
    from ..core.prompts import validate_text

    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise InputError(f"text prompt file not found: {p}")
    tokenizer = clip_tokenizer(clip_model) if clip_model else None
    try:
        data = json.loads(p.read_text(), object_pairs_hook=_JsonPairs)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot parse text prompt file {p}: {exc}") from exc
    if not isinstance(data, _JsonPairs):
        raise InputError(f'{p}: expected {{"sequence": {{"object id": "text"}}}}')
    out: Dict[str, Dict[int, str]] = {}
    for seq, objs in data:
        if not isinstance(objs, _JsonPairs):
            raise InputError(f"{p}: entry of sequence {seq!r} must map object ids to texts")
        if seq in out:
            raise InputError(f"{p}: sequence {seq!r} is given twice; give each sequence once")
        out[str(seq)] = {}
        keys: Dict[int, str] = {}  # object id -> the key that named it
        for k, text in objs:
            obj = _text_object_id(k, keys, p, seq)
            keys[obj] = k
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{p}: text of object {k} in sequence {seq!r} must be a non-empty string")
            try:
                validate_text(text, max_length)
                too_long = tokenizer is not None and clip_context_error(tokenizer, text)
                if too_long:
                    raise InputError(f"text is {too_long}")
            except InputError as exc:
                raise InputError(f"{p}: text of object {k} in sequence {seq!r}: {exc}") from None
            out[str(seq)][obj] = text
    return out


class _JsonPairs(list):
    """A JSON object as its (key, value) pairs in file order: ``json.loads`` would keep only the
    last of two equal keys, without a word."""


def _text_object_id(key: str, taken: Dict[int, str], path: Path, seq: str) -> int:
    """The object id a key of a text prompts file names. Plain ASCII digits only: ``int()`` also
    reads " 1" and "1_0" (10). An id named twice ("1" and "01", or one key twice) is refused:
    the last text would silently win. ``taken``: id -> key, this sequence's ids so far."""
    where = f"{path}: object id {key!r} of sequence {seq!r}"
    if not (key.isascii() and key.isdigit()):
        raise InputError(f"{where} is not an integer in plain digits (0-9 only: no sign, space or '_')")
    obj = int(key)
    if obj in taken:
        raise InputError(f"{where} is object {obj}, which {taken[obj]!r} names already; "
                         "give each object once")
    return obj


def _tracker_config(args):
    from ..core.config import TrackerConfig

    overrides = {}
    if args.model:
        overrides["model_cfg"] = args.model
    if args.image_size is not None:  # 0 is refused by the config, not taken for "unset"
        overrides["image_size"] = args.image_size
    if args.device:
        overrides["device"] = args.device
    if args.checkpoint:
        overrides["checkpoint"] = args.checkpoint
        overrides["allow_random_weights"] = False
    if args.random_weights:
        overrides["allow_random_weights"] = True
        overrides["checkpoint"] = ""
    if args.config:
        cfg = TrackerConfig.from_yaml(args.config, overrides=overrides)
    else:
        cfg = TrackerConfig.from_mapping(overrides)
    if not cfg.allow_random_weights:
        from ..core.models import check_checkpoint  # CheckpointError naming the file

        check_checkpoint(cfg.checkpoint, cfg.model_cfg)
    return cfg


def check_text_sequences(texts: Dict[str, Dict[int, str]], known: Sequence[str],
                          where: str) -> None:
    """Text prompts for a sequence the input lacks are refused, as those for an unknown object
    are (``plan_prompts``); sequences of the input that the run leaves out may have texts."""
    unknown = sorted(set(texts) - set(known))
    if unknown:
        raise InputError(f"text prompts for sequence(s) {unknown} that {where} does not contain")


def frames_sequence_name(frames: str) -> str:
    """The sequence name of ``--frames``: its folder's or file's name, with ``.`` and ``..`` read
    (``--frames ..`` in ``clip/work`` is ``clip``, not ".."), but symlinks not followed (a clip
    linked from a data store, git-annex style, keeps the name the ground truth has)."""
    return Path(os.path.abspath(os.path.expanduser(frames))).stem or "sequence"


def _sequence_sources(args, texts, planner=None):
    """(loader, prompts cache, total_frames, input_info) for --dataset or --frames.

    ``planner(name, frames, gt, where)`` makes a sequence's prompts (default: one click per GT
    object, with its --text-prompts text); it runs once per sequence, on the first load."""
    from .davis_io import DavisDataset, DatasetError, read_label_png
    from .runner import SequenceInput, plan_prompts

    prompts_cache: Dict[str, list] = {}
    if planner is None:
        def planner(name, frames, gt, where):
            return plan_prompts(gt, texts.get(name), where=where)

    if args.dataset:
        if args.frames or args.first_mask or args.topic:
            raise InputError("--dataset cannot be combined with --frames/--first-mask/--topic")
        ds = DavisDataset(args.dataset, resolution=args.resolution, sequences=args.sequences,
                          imageset=args.imageset)
        check_text_sequences(texts, ds.available_sequences(), f"dataset {args.dataset}")
        seqs = [ds.sequence(n).truncated(args.max_frames) for n in ds.sequence_names]

        def load() -> Iterator[SequenceInput]:
            for sd in seqs:
                frames = sd.read_frames()
                labels = sd.read_labels(frames[0].shape)
                index = {n: i for i, n in enumerate(sd.frame_names)}
                gt = {index[n]: lab for n, lab in labels.items()}
                if sd.name not in prompts_cache:
                    prompts_cache[sd.name] = planner(sd.name, frames, gt, f"sequence {sd.name!r}")
                yield SequenceInput(sd.name, frames, sd.frame_names, gt, prompts_cache[sd.name])

        info = {"kind": "davis", "path": str(Path(args.dataset)), "resolution": ds.resolution,
                "sequences": [s.name for s in seqs], "frames": sum(len(s) for s in seqs),
                "max_frames": args.max_frames}
        if ds.imageset_path is not None:
            info["imageset"] = str(ds.imageset_path)
        return load, prompts_cache, info["frames"], info

    if not args.frames:
        raise InputError("give --dataset DIR (DAVIS layout) or --frames PATH with --first-mask PNG")
    if not args.first_mask:
        raise InputError("--frames needs --first-mask: a label PNG of the first frame (0 = background, "
                         "k = object k) that defines the objects and their clicks")
    dataset_only = [flag for flag, value in (("--sequences", args.sequences), ("--imageset", args.imageset),
                                             ("--resolution", args.resolution)) if value is not None]
    if dataset_only:
        raise InputError(f"{' and '.join(dataset_only)} only apply to --dataset, not to --frames "
                         "(one sequence, read as it is)")
    from ..frame_sources import open_frames

    src = open_frames(args.frames, topic=args.topic, max_frames=args.max_frames)
    first = read_label_png(args.first_mask)
    name = frames_sequence_name(args.frames)
    check_text_sequences(texts, [name], f"--frames {args.frames} (its sequence is {name!r})")

    def load() -> Iterator[SequenceInput]:
        frames = src.read_all()
        if first.shape != frames[0].shape[:2]:
            raise DatasetError(f"first-frame mask {args.first_mask} is {first.shape[1]}x{first.shape[0]} "
                               f"but the frames of {args.frames} are {frames[0].shape[1]}x{frames[0].shape[0]}")
        gt = {0: first}
        if name not in prompts_cache:
            prompts_cache[name] = planner(name, frames, gt, str(args.first_mask))
        yield SequenceInput(name, frames, list(src.names), gt, prompts_cache[name])

    info = {"kind": src.kind, "path": str(Path(args.frames)), "topic": getattr(src, "topic", None),
            "sequences": [name], "frames": src.count, "max_frames": args.max_frames,
            "first_mask": str(args.first_mask)}
    return load, prompts_cache, src.count, info


def _requested_modes(args) -> List[str]:
    """--modes as mode_specs reads them (any case)."""
    return [m.strip().lower() for m in args.modes]


#: run flags that tune something another setting turns on: (flag, its attribute, whether what it
#: tunes runs, the setting that runs it). None (an empty list for --text-variants) is "not
#: given", so the defaults stay elsewhere.
TUNING_FLAGS = (
    ("--refine-threshold", "refine_threshold", lambda a: a.refine, "--refine"),
    ("--max-rounds", "max_rounds", lambda a: a.refine, "--refine"),
    ("--clicks-per-round", "clicks_per_round", lambda a: a.refine, "--refine"),
    ("--auto-objects", "auto_objects", lambda a: a.prompt == "auto", "--prompt auto"),
    ("--keep-ratios", "keep_ratios", lambda a: "pruned" in _requested_modes(a),
     "the pruned mode in --modes"),
    # the official predictor takes no text: the variants run in the streaming modes only
    ("--text-variants", "text_variants", lambda a: set(_requested_modes(a)) - {"official"},
     "a streaming mode (dense or pruned) in --modes"),
)


def _refuse_flags_without_effect(args) -> None:
    """A tuning flag given where what it tunes does not run would change nothing, and the report
    would read as if made with it; refused, naming the setting it needs."""
    unused = [(flag, needs) for flag, attr, runs, needs in TUNING_FLAGS
              if getattr(args, attr) not in (None, []) and not runs(args)]
    if unused:
        needs = unused[0][1]
        flags = [flag for flag, n in unused if n == needs]
        raise InputError(f"{' and '.join(flags)} only apply with {needs}, which is not given")


def _protocol(args):
    """The prompt protocol of the flags; ``Protocol``'s defaults for those not given."""
    from .runner import Protocol

    given = {"refine_threshold": args.refine_threshold, "max_rounds": args.max_rounds,
             "clicks_per_round": args.clicks_per_round}
    protocol = Protocol(refine=args.refine, **{k: v for k, v in given.items() if v is not None})
    if not 0.0 <= protocol.refine_threshold <= 1.0:
        raise InputError("--refine-threshold must be in [0, 1]")
    if protocol.max_rounds < 0 or protocol.clicks_per_round < 1:
        raise InputError("--max-rounds must be >= 0 and --clicks-per-round >= 1")
    return protocol


def _check_prompt_options(args) -> None:
    variants = args.text_variants
    if args.prompt == "auto":
        if args.refine:
            raise InputError("--refine clicks where the ground truth says; it cannot be combined "
                             "with --prompt auto (no ground truth used to prompt)")
        if args.text_prompts or "user" in variants:
            raise InputError("--prompt auto starts its own objects: --text-prompts and the 'user' "
                             "text variant name GT objects and do not apply")
        if args.auto_objects is not None and args.auto_objects < 1:
            raise InputError("--auto-objects must be >= 1")
    if "user" in variants and not args.text_prompts:
        raise InputError("text variant 'user' needs --text-prompts")


def _plan_automatic(args, cfg, texts):
    """Sources whose prompts come from the automatic prompt (``--prompt auto``) or carry the
    text variants; every sequence is planned here, once, before the timed runs. Returns
    (loader, prompts, total, info, report section)."""
    from ..core.auto_prompt import AutoPrompter, text_relevance_available
    from .auto_prompts import describe_objects, plan_auto_prompts, stage_summary
    from .runner import plan_prompts

    auto_objects = _auto_objects(args)
    model = None
    if args.prompt == "auto":
        from ..core.models import build_predictor

        model = build_predictor(cfg)
    prompter = AutoPrompter(cfg, model)
    notes: Dict[str, List[str]] = {}
    use_phrase = text_relevance_available(cfg)

    def planner(name, frames, gt, where):
        if args.prompt == "auto":
            prompts, notes[name] = plan_auto_prompts(frames[0], prompter, auto_objects, use_phrase)
            return prompts
        prompts = plan_prompts(gt, texts.get(name), where=where)
        describe_objects(prompts, frames, gt, prompter)
        return prompts

    load, prompts, total, info = _sequence_sources(args, texts, planner)
    for _ in load():
        pass
    prompter.release()
    del model
    for v in args.text_variants:
        lacking = [f"{seq}/{p.obj_id}" for seq, ps in prompts.items() for p in ps if not p.texts.get(v)]
        if lacking:
            raise InputError(f"text variant {v!r} has no text for {', '.join(lacking[:5])} "
                             f"({_why_variant_lacks_text(v, args, cfg)})")
    section = {"prompt": args.prompt, "objects_per_sequence": auto_objects if args.prompt == "auto" else None,
               "text_variants": list(args.text_variants), "phrase_used_as_text": use_phrase,
               "stage_ms": stage_summary(prompts), "notes": {k: v for k, v in notes.items() if v}}
    return load, prompts, total, info, section


def _auto_objects(args) -> int:
    """--auto-objects, or its default (the flag is None when not given, so that a given one
    without --prompt auto can be refused)."""
    return DEFAULT_AUTO_OBJECTS if args.auto_objects is None else args.auto_objects


def _refuse_more_objects_than_tracked(args, specs, cfg, prompts: Dict[str, list]) -> None:
    """The streaming modes track at most the tracker's ``max_objects`` objects (sam2's predictor
    has no such limit): a sequence that starts more (its GT objects, or --auto-objects) is
    refused before any mode runs. Found by the tracker, it ended the first streaming mode after
    the official mode had run over every sequence, naming no sequence and writing no report."""
    if all(spec.mode == "official" for spec in specs):
        return
    if args.prompt == "auto":
        counts = {"--auto-objects asks for": _auto_objects(args)}
    else:
        counts = {f"sequence {seq!r} has": len(ps) for seq, ps in prompts.items()}
    for what, count in counts.items():
        if count > cfg.max_objects:
            raise InputError(f"{what} more objects ({count}) than the tracker's max_objects "
                             f"({cfg.max_objects}), the most the streaming modes track; raise "
                             "max_objects in --config, or run --modes official alone")


def _why_variant_lacks_text(variant: str, args, cfg) -> str:
    """Where a text variant's missing text would have come from: the user's file, or the
    caption model (the other variants are made from its caption)."""
    if variant == "user":
        return f"the --text-prompts file {args.text_prompts} has none for it"
    if not cfg.auto_caption_model:
        return "no auto_caption_model configured"
    return "the caption model gave no phrase"


def _report_paths(args) -> Dict[str, Path]:
    """Where ``run`` writes its report, by flag (a flag not given: its file in ``--out``); two
    flags naming one file are an InputError before any work (the later write would replace the
    earlier one)."""
    out = Path(args.out)
    paths = {"--json": Path(args.json or out / "report.json"),
             "--markdown": Path(args.markdown or out / "report.md"),
             "--plot": Path(args.plot or out / "report.png")}
    seen: Dict[Path, str] = {}
    for flag, path in paths.items():
        other = seen.setdefault(path.resolve(), flag)
        if other != flag:
            raise InputError(f"{other} and {flag} both write {path}: give them different files "
                             f"(without the flag: report.json, report.md and report.png in --out)")
    return paths


def cmd_run(args) -> int:
    from .report import PLOT_SUFFIXES, markdown_table, plot, run_report, write_json
    from .runner import RunOptions, any_prompt_text, mask_folder, mode_specs, run_modes

    _refuse_flags_without_effect(args)
    _check_prompt_options(args)
    protocol = _protocol(args)
    check_max_frames(args.max_frames)
    if args.warmup < 0:
        raise InputError("--warmup must be >= 0")
    if args.save_masks or not (args.json and args.markdown and args.plot):
        check_output_folder(args.out, "--out")
    check_output_file(args.json, "--json")
    check_output_file(args.markdown, "--markdown")
    check_output_file(args.plot, "--plot", suffixes=PLOT_SUFFIXES)
    reports = _report_paths(args)
    specs = mode_specs(args.modes, args.keep_ratios, args.text_variants)
    cfg = _tracker_config(args)  # checks the checkpoint before any data is read
    texts = load_text_prompts(args.text_prompts, cfg.max_text_length, cfg.text_encoder)
    if any(spec.mode != "official" for spec in specs):  # before the official mode's long run
        from ..core.tracker import check_tracker_files

        check_tracker_files(cfg, with_texts=any(texts.values()) or bool(args.text_variants))
    load, prompts, total, info = _sequence_sources(args, texts)
    if args.save_masks:  # a name that is no folder name is refused before anything runs
        for name in info["sequences"]:
            mask_folder(Path(args.out), specs[0].label, name)
    for _ in load():  # validate every input (sizes, labels, prompts) before loading a model
        pass
    _refuse_more_objects_than_tracked(args, specs, cfg, prompts)

    from ..core.models import resolve_device

    device = str(resolve_device(cfg.device))
    cfg = cfg.replace(device=device)
    auto_section = None
    if args.prompt == "auto" or args.text_variants:
        with warnings.catch_warnings():
            if cfg.allow_random_weights:
                warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
            load, prompts, total, info, auto_section = _plan_automatic(args, cfg, texts)
    out = Path(args.out)
    warmup_texts = {spec.text_variant: any_prompt_text(prompts, spec.text_variant) for spec in specs}
    opts = RunOptions(protocol=protocol, warmup_frames=args.warmup,
                      warmup_texts={k: v for k, v in warmup_texts.items() if v},
                      save_masks=out if args.save_masks else None, progress=not args.no_progress,
                      match_objects=args.prompt == "auto")

    def make_tracker(keep_ratio: float):
        from ..core.tracker import StreamingTracker

        return StreamingTracker(cfg.replace(keep_ratio=keep_ratio))

    def make_official():
        from .runner import official_factory

        return official_factory(cfg, progress=not args.no_progress)

    with warnings.catch_warnings():
        if cfg.allow_random_weights:
            warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        runs = run_modes(specs, load, total, make_tracker=make_tracker, make_official=make_official,
                         opts=opts, device=device)

    scored = any(r.score is not None for r in runs)
    report = run_report(
        runs, input_info=info,
        model_info={"model_cfg": cfg.model_cfg, "checkpoint": cfg.checkpoint or None,
                    "random_weights": bool(cfg.allow_random_weights), "image_size": cfg.image_size,
                    "device": device},
        tracker_config=cfg.to_dict(), protocol=protocol.to_dict(),
        prompts={seq: {str(p.obj_id): p.to_dict() for p in ps} for seq, ps in prompts.items()},
        accuracy_valid=scored and not cfg.allow_random_weights, auto_prompt=auto_section)
    json_path = write_json(reports["--json"], report)
    md = markdown_table(report)
    md_path = reports["--markdown"]
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(md)
    png = plot(report, reports["--plot"])
    print(md)
    print(f"wrote {json_path}, {md_path}" + (f", {png}" if png else ""))
    if args.save_masks:
        same_frames = "" if args.max_frames is None else f" --max-frames {args.max_frames}"
        all_ids = " --objects all" if any(s.scored_ids == "all" for r in runs
                                          for s in r.sequences) else ""
        print(f"predicted masks under {out}/<mode>/<sequence>/ (score them with fastsam2-eval "
              f"score{same_frames}{all_ids})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "score":
            return cmd_score(args)
        if args.command == "synth":
            return cmd_synth(args)
        return cmd_run(args)
    except (FastSam2Error, OSError) as exc:  # OSError: e.g. an output that cannot be written
        print(f"fastsam2-eval: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
