"""run.sh composes the paper's command lines: a stand-in Python records what it is asked to run."""
import pytest
from conftest import run_sh


def value(argv, option):
    return argv[argv.index(option) + 1]


def test_a_real_pair_runs_the_papers_setting(tmp_path):
    source, ssg, ssgpp, report = run_sh(tmp_path, SRC="dukemtmc", TGT="market1501")
    assert source[0] == "source_train.py" and value(source, "-a") == "resnet50"
    for step in (ssg, ssgpp):
        assert (value(step, "--iteration"), value(step, "--epochs"), value(step, "--bn-group-size")) == \
            ("30", "70", "64")
        assert value(step, "--resume") == str(tmp_path / "logs" / "source")
        assert (value(step, "--height"), value(step, "--width"), value(step, "--num-split")) == ("256", "128", "2")
    assert value(ssgpp, "--label-iteration") == "5" and value(ssgpp, "--sample") == "cluster"
    assert report == ["-m", "reid.report", str(tmp_path / "logs")]


@pytest.mark.parametrize("pair", [("dukemtmc", "market1501"), ("synth_a", "synth_b")])
def test_source_model_skips_source_training(tmp_path, pair):
    calls = run_sh(tmp_path, SRC=pair[0], TGT=pair[1], SOURCE_MODEL="/models/dukemtmc_trained.pth.tar")
    assert [call[0] for call in calls] == ["selftraining.py", "semitraining.py", "-m"]
    assert all(value(call, "--resume") == "/models/dukemtmc_trained.pth.tar" for call in calls[:2])


def test_an_msmt17_target_runs_the_same_setting_as_any_other(tmp_path):
    (tmp_path / "market").mkdir()
    market = run_sh(tmp_path / "market", SRC="dukemtmc", TGT="market1501")
    for step, same_step in zip(run_sh(tmp_path, SRC="market1501", TGT="msmt17")[1:3], market[1:3]):
        assert value(step, "--bn-group-size") == "64" and "--num-instances" not in step  # the default, 4
        assert step[step.index("--num-split"):] == same_step[same_step.index("--num-split"):]


def test_seed_reaches_every_stage_and_names_the_logs_dir(tmp_path):
    for seed, logs in ((None, "logs/synth_a-synth_b"), ("2", "logs/synth_a-synth_b-seed2")):
        source, ssg, ssgpp, report = run_sh(tmp_path, SEED=seed, LOGS_DIR=None)
        assert [value(step, "--seed") for step in (source, ssg, ssgpp)] == [seed or "1"] * 3
        assert value(ssg, "--logs_dir") == f"{logs}/ssg" and report[-1] == logs


def test_own_crops_as_the_target(tmp_path):
    env = dict(TGT="folder:/data/my_crops", IMAGES_PER_IDENTITY="17", TEST_DIR="/data/test", LOGS_DIR=None)
    source, ssg, ssgpp, report = run_sh(tmp_path, **env)
    assert "--test-datasets" not in source and value(source, "--logs_dir") == "logs/synth_a-my_crops/source"
    for step in (ssg, ssgpp):  # the profile's rho gives way to the rule's
        assert value(step, "--tgt_dataset") == "folder:/data/my_crops"
        assert "--rho" not in step and value(step, "--images-per-identity") == "17"
        assert value(step, "--test-dir") == "/data/test" and "--lr" in step
    assert report[-1] == "logs/synth_a-my_crops"
