"""A tracker on ``cuda:N`` (N > 0) ties its CUDA work to cuda:N, not to the thread's current device.

A new thread's current device is cuda:0, so an event recorded with no stream, a synchronize() with
no device or a capture stream made with no device all targeted cuda:0 while the tracker's copies
and steps ran on cuda:N: a frame's masks could be read from the host buffer before their copy
landed, and timings measured the wrong GPU. On the CPU, :class:`_FakeCudaDevices` replaces
torch.cuda's device, stream, event, synchronize and graph calls by recorders (as
``test_fast_path._FakeCudaGraphs`` does) that resolve "no device" to the current one, cuda:0 unless
a ``torch.cuda.device`` context says otherwise; each test asserts that every call named cuda:1.
"""

import contextlib

import numpy as np
import pytest
import torch

from fastsam2_ros.core import TrackerConfig
from fastsam2_ros.core.models import build_predictor
from fastsam2_ros.core.preprocess import FrameStager
from fastsam2_ros.core.router import RouterMLP, save_router
from fastsam2_ros.core.stats import StageTimer
from fastsam2_ros.core.step_runner import StepRunner
from fastsam2_ros.core.tracker import StreamingTracker

CUDA0, CUDA1 = torch.device("cuda:0"), torch.device("cuda:1")


class _FakeCudaDevices:
    """torch.cuda on the CPU, recording the device each call targets (see the module docstring)."""

    def __init__(self) -> None:
        self.current = [CUDA0]  # the thread's current device (a stack of torch.cuda.device contexts)
        self.events = []  # the device of the stream each event was recorded on
        self.syncs = []  # the device each synchronize() waited for
        self.graphs = []  # (capture stream's device, current device) of each torch.cuda.graph
        self.streams = []  # the device of each stream made (torch.cuda.Stream)
        self.entered = []  # the device current at each torch.cuda.device enter
        self._current_streams = {}

    def _resolve(self, device) -> torch.device:
        if device is None:
            return self.current[-1]
        if isinstance(device, int):
            return torch.device("cuda", device)
        device = torch.device(device)
        return device if device.index is not None else self.current[-1]

    def install(self, monkeypatch) -> "_FakeCudaDevices":
        fake = self

        class Stream:
            def __init__(self, device=None, **kwargs):
                self.device = fake._resolve(device)

            def wait_stream(self, other):
                assert other.device == self.device, "streams of two devices"

        class Event:
            def __init__(self, **kwargs):
                self.device = None

            def record(self, stream=None):
                stream = stream if stream is not None else fake.current_stream()
                self.device = stream.device
                fake.events.append(stream.device)

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                assert end.device == self.device, "timing events of two devices"
                return 0.0

        class Device:
            def __init__(self, device):
                self.device = fake._resolve(device)

            def __enter__(self):
                fake.current.append(self.device)
                fake.entered.append(self.device)

            def __exit__(self, *exc):
                fake.current.pop()

        class CUDAGraph:
            def replay(self):
                pass

        def graph(cuda_graph, pool=None, stream=None, **kwargs):
            # torch's default capture stream is made once, on the device current at the time
            capture = stream.device if stream is not None else CUDA0
            fake.graphs.append((capture, fake.current[-1]))
            return contextlib.nullcontext()

        def make_stream(device=None, **kwargs):
            stream = Stream(device)
            fake.streams.append(stream.device)
            return stream

        self.Stream = Stream
        monkeypatch.setattr(torch.cuda, "Stream", make_stream)
        monkeypatch.setattr(torch.cuda, "Event", Event)
        monkeypatch.setattr(torch.cuda, "device", Device)
        monkeypatch.setattr(torch.cuda, "current_stream", self.current_stream)
        monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: fake.syncs.append(
            fake._resolve(device)))
        monkeypatch.setattr(torch.cuda, "CUDAGraph", CUDAGraph)
        monkeypatch.setattr(torch.cuda, "graph", graph)
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 0)
        monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
        return self

    def current_stream(self, device=None):
        device = self._resolve(device)
        if device not in self._current_streams:
            self._current_streams[device] = self.Stream(device)
        return self._current_streams[device]


@pytest.fixture
def fake_cuda(monkeypatch):
    return _FakeCudaDevices().install(monkeypatch)


@pytest.fixture(scope="module")
def model128():
    cfg = TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=128, device="cpu",
                        keep_ratio=0.3, mc_passes=0, bf16=False)
    return cfg, build_predictor(cfg)


def test_staging_buffer_events_are_recorded_on_the_devices_stream(fake_cuda):
    """FrameStager.mark_consumed recorded its event on the current device's stream (cuda:0), not
    on cuda:1's, where the frame's copy runs: a refill could overwrite a buffer being read."""
    stager = FrameStager("device", 16, CUDA1)
    staged = stager.stage(np.zeros((6, 8, 3), np.uint8))
    stager.mark_consumed(staged)
    assert fake_cuda.events == [CUDA1]


def test_stage_timers_synchronise_their_device(fake_cuda):
    """StageTimer and the evaluation's clock synchronised the current device only."""
    from fastsam2_ros.eval.runner import _sync

    timer = StageTimer(str(CUDA1))
    with timer.stage("encoder"):
        pass
    _sync(str(CUDA1))
    assert fake_cuda.syncs == [CUDA1] * 3
    StageTimer("cpu")._sync()
    _sync("cpu")
    assert fake_cuda.syncs == [CUDA1] * 3  # off CUDA nothing synchronises


def test_steps_are_captured_on_the_runners_device_and_stream(fake_cuda, monkeypatch):
    """StepRunner._capture: torch.cuda.graph(graph) with no stream captured on torch's default
    capture stream, made once per process on whichever device was current (cuda:0), and began
    the capture on the current device."""
    real_empty_like = torch.empty_like
    # the runner's static buffers stay on the CPU (the fakes run no CUDA work)
    monkeypatch.setattr(torch, "empty_like", lambda t, device=None, **k: real_empty_like(t, **k))
    runner = StepRunner(CUDA1, use_graphs=True)
    assert runner.use_graphs
    step = lambda x: {"y": x + 1}  # noqa: E731
    runner.run("a", step, {"x": torch.zeros(2)})
    runner.run("b", step, {"x": torch.zeros(3)})
    assert len(runner) == 2 and not runner.failures
    assert fake_cuda.graphs == [(CUDA1, CUDA1)] * 2  # captured on cuda:1, with cuda:1 current
    assert set(fake_cuda.streams) == {CUDA1} and set(fake_cuda.syncs) == {CUDA1}
    assert fake_cuda.current == [CUDA0]  # (the context is left)


def test_a_tracker_on_cuda1_times_copies_and_waits_on_cuda1(fake_cuda, model128, video):
    """A tracked frame's device-time events and the event of its masks' copy to the host were
    recorded on the current device's stream (cuda:0) while its step and copy ran on cuda:1:
    ``result()`` could read the host buffer before the copy landed. The step runs with cuda:1
    current, and so does collecting the result. (The model runs on the CPU: only the tracker's
    device says cuda:1, after its prompt.)"""
    cfg, model = model128
    frames = video[0][:4]
    tracker = StreamingTracker(cfg, model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    want = [tracker.track(f).masks[1] for f in frames[1:]]
    tracker = StreamingTracker(cfg, model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    tracker.device = CUDA1
    pending = [tracker.submit(f) for f in frames[1:]]
    # per frame: the step's two timing events, then its masks' copy
    assert fake_cuda.events == [CUDA1] * 3 * len(pending)
    assert all(p._event.device == CUDA1 for p in pending)
    entered = len(fake_cuda.entered)
    assert entered >= len(pending) and set(fake_cuda.entered) == {CUDA1}
    got = [p.result() for p in pending]
    assert len(fake_cuda.entered) > entered and set(fake_cuda.entered) == {CUDA1}
    assert set(fake_cuda.syncs) <= {CUDA1} and fake_cuda.current == [CUDA0]
    for mask, res in zip(want, got):
        assert np.array_equal(mask, res.masks[1]) and res.stats.gpu_ms == 0.0


def test_the_router_mlp_is_moved_once_outside_inference_mode(tmp_path, model128, video, monkeypatch):
    """TokenRouter.route moved the MLP to the tokens' device inside the tracker's inference mode:
    on the first route on a GPU its weights became inference tensors for good. The tracker moves
    it to its device once, when it loads it, outside inference mode."""
    cfg, model = model128
    frames = video[0][:3]
    path = tmp_path / "router.pt"
    save_router(RouterMLP(model.hidden_dim), path)
    moves = []
    real_to = torch.nn.Module.to

    def to(self, *args, **kwargs):
        moves.append((torch.device(args[0]) if args else kwargs.get("device"),
                      torch.is_inference_mode_enabled()))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(RouterMLP, "to", to)
    tracker = StreamingTracker(cfg.replace(router_weights=str(path)), model=model)
    tracker.add_prompt(1, points=[[40, 60]], labels=[1], image=frames[0])
    for f in frames[1:]:
        assert tracker.track(f).stats.router_mode == "mlp"
    assert moves == [(tracker.device, False)]
    assert not any(p.is_inference() for p in tracker.router.mlp.parameters())
