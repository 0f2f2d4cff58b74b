"""The cost of a record: seconds per phase on a fake clock, what an interrupted attempt carries over, peak
memory, the synchronisation on CUDA (faked), and the run's header."""
import argparse
import time

import numpy as np
import pytest
import torch

from reid.cost import meter as cost_module
from reid.cost.meter import (
    GIB,
    PARTIAL_KEY,
    CostMeter,
    current_rss,
    describe_header,
    finish_record,
    record_meter,
    rss_high_water,
    run_header,
)
from reid.utils.records import MetricsLog, read_json, read_metrics
from reid.utils.runtime import Runtime

CPU = torch.device("cpu")


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_phases_add_up_and_the_total_holds_what_no_phase_covers():
    clock, saved = FakeClock(), []
    meter = CostMeter(CPU, save=saved.append, clock=clock)
    clock.now += 1.0  # before the first phase: only in the total
    with meter.phase("features"):
        clock.now += 2.0
    with meter.phase("training"):
        clock.now += 5.0
    with meter.phase("features"):  # entered again: adds up
        clock.now += 0.5
    clock.now += 0.25
    summary = meter.summary()
    assert summary["seconds"] == {"features": 2.5, "training": 5.0, "total": 8.75}
    assert summary["attempts"] == 1 and "peak_gpu_gib" not in summary
    # Saved at the end of every phase, with the figures so far.
    assert [entry["seconds"] for entry in saved] == [{"features": 2.0, "total": 3.0},
                                                     {"features": 2.0, "training": 5.0, "total": 8.0},
                                                     {"features": 2.5, "training": 5.0, "total": 8.5}]


def test_a_phase_cut_by_ctrl_c_is_counted_and_saved():
    clock, saved = FakeClock(), []
    meter = CostMeter(CPU, save=saved.append, clock=clock)
    with pytest.raises(KeyboardInterrupt), meter.phase("training"):
        clock.now += 3.0
        raise KeyboardInterrupt
    assert saved[-1]["seconds"] == {"training": 3.0, "total": 3.0}


def test_an_interrupted_attempt_is_added_phase_by_phase():
    clock = FakeClock()
    carried = {"seconds": {"features": 2.0, "grouping": 1.0, "total": 4.0}, "peak_rss_gib": 1000.0, "attempts": 1}
    meter = CostMeter(CPU, carried=carried, clock=clock)
    with meter.phase("features"):
        clock.now += 3.0
    with meter.phase("training"):
        clock.now += 4.0
    summary = meter.summary()
    assert summary["seconds"] == {"features": 5.0, "grouping": 1.0, "training": 4.0, "total": 11.0}
    assert summary["peak_rss_gib"] == 1000.0 and summary["attempts"] == 2


def test_a_phase_that_sleeps_holds_its_time_on_the_real_clock():
    meter = CostMeter(CPU)
    with meter.phase("sleep"):
        time.sleep(0.2)
    seconds = meter.summary()["seconds"]
    assert 0.2 <= seconds["sleep"] <= seconds["total"] < 5.2


def test_the_rss_peak_holds_memory_alive_at_a_phase_end():
    assert rss_high_water() > 0 and current_rss() > 0
    meter = CostMeter(CPU)
    before = current_rss()
    with meter.phase("allocate"):
        block = np.ones(2**27 // 8)  # 128 MiB, touched
    del block
    assert meter.summary()["peak_rss_gib"] >= (before + 0.9 * 2**27) / GIB


def test_on_cuda_the_device_is_synchronised_at_phase_ends_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: calls.append("synchronize"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3 * GIB)
    meter = CostMeter(torch.device("cuda", 0), clock=FakeClock())
    with meter.phase("training"):
        calls.append("work")
    with pytest.raises(RuntimeError), meter.phase("evaluation"):
        raise RuntimeError("device failure")  # no synchronisation: it would raise again
    assert calls == ["reset", "work", "synchronize"]
    assert meter.summary()["peak_gpu_gib"] == 3.0


def test_a_resumed_record_carries_what_the_interrupted_attempt_left_in_metrics(tmp_path):
    fpath = str(tmp_path / "metrics.json")
    first = record_meter(MetricsLog(fpath), "iteration_3", CPU)
    with first.phase("features"):
        pass
    partial = read_json(fpath)[PARTIAL_KEY]
    assert partial["record"] == "iteration_3" and set(partial["seconds"]) == {"features", "total"}

    metrics = MetricsLog(fpath, read_metrics(fpath))
    assert record_meter(metrics, "iteration_4", CPU).summary()["attempts"] == 1  # another record: nothing carried
    resumed = record_meter(metrics, "iteration_3", CPU)
    with resumed.phase("training"):
        pass
    summary = resumed.summary()
    assert summary["attempts"] == 2 and set(summary["seconds"]) == {"features", "training", "total"}
    assert summary["seconds"]["total"] >= partial["seconds"]["total"]
    finish_record(metrics, "iteration_3", {"mAP": 50.0, "cost": summary})
    assert read_json(fpath) == {"iteration_3": {"mAP": 50.0, "cost": summary}}


def test_the_header_names_the_machine_and_the_settings_the_seconds_depend_on(monkeypatch):
    monkeypatch.setattr(cost_module, "cpu_name", lambda: "AMD EPYC")
    args = argparse.Namespace(amp=True, workers=2, bn_group_size=64, sync_bn=True)
    header = run_header(args, Runtime(CPU))
    assert {key: header[key] for key in ("device", "device_name", "gpus", "amp", "processes", "bn_group_size",
                                         "workers", "torch")} == {
        "device": "cpu", "device_name": "AMD EPYC", "gpus": 0, "amp": None, "processes": 1, "bn_group_size": 64,
        "workers": 2, "torch": torch.__version__}
    assert header["cpus"] >= 1 and isinstance(header["tf32_matmul"], bool) and header["started"]
    assert describe_header(header) == (f"CPU AMD EPYC, {header['cpus']} cores, {header['threads']} threads, 2 loader "
                                       f"workers; torch {torch.__version__}; fp32 (TF32 and --amp act on CUDA only); "
                                       "1 process; BatchNorm over groups of 64 images")
    gpu = {"gpus": 2, "device_name": "NVIDIA H200", "cpus": 16, "workers": 8, "torch": "2.11.0", "cuda": "13.0",
           "amp": "bfloat16", "tf32_matmul": False, "tf32_cudnn": True, "processes": 2, "bn_group_size": 0,
           "sync_bn": True}
    assert describe_header(gpu) == ("2 x NVIDIA H200, 16 CPU cores, 8 loader workers; torch 2.11.0 (CUDA 13.0); "
                                    "AMP bfloat16 (TF32 matmul off, cuDNN on); 2 processes; BatchNorm over the "
                                    "global batch (synchronised)")
