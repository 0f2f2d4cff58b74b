"""--check-images decodes every image a run uses before any training and names all unreadable ones in one line,
so that a damaged copy of a dataset is repaired in one round."""
import shutil

import pytest
from conftest import TINY_MODEL, adapt_argv, assert_one_line, run

import selftraining
import source_train


@pytest.fixture
def damaged(tiny_pair, tmp_path):
    """A copy of the synthetic pair and its two unreadable images: a truncated one among synth_b's training
    images and one that is no image at all among synth_b's queries."""
    data = shutil.copytree(tiny_pair, tmp_path / "data")
    truncated = sorted((data / "synth_b" / "bounding_box_train").iterdir())[5]
    truncated.write_bytes(truncated.read_bytes()[:200])
    not_an_image = sorted((data / "synth_b" / "query").iterdir())[-1]
    not_an_image.write_text("a copy that went wrong")
    return data, [truncated, not_an_image]


def one_line(main, argv, capsys):
    status, lines = run(main, argv, capsys)
    assert_one_line(status, lines, "error: --check-images: 2 of the ")
    return lines[0]


def test_an_adaptation_run_names_every_damaged_image_before_evaluating(damaged, source_checkpoint, tmp_path,
                                                                        capsys):
    data, victims = damaged
    argv = adapt_argv(data, tmp_path / "logs", source_checkpoint, "--check-images")
    line = one_line(selftraining.main, argv, capsys)
    assert "images of synth_a trainval, synth_b trainval, synth_b query, synth_b gallery cannot be read" in line
    for victim in victims:
        assert f"{victim}: cannot read image" in line
    assert not (tmp_path / "logs" / "metrics.json").exists()  # stopped before the before-adaptation evaluation


def test_source_training_checks_the_datasets_it_tests_on_too(damaged, tmp_path, capsys):
    data, victims = damaged
    argv = ["--dataset", "synth_b", "--data_dir", str(data), "--logs_dir", str(tmp_path / "logs"),
            "--test-datasets", "synth_a", "--check-images", "--no-pretrained", *TINY_MODEL]
    line = one_line(source_train.main, argv, capsys)
    assert "images of synth_b training, synth_b query, synth_b gallery, synth_a query, synth_a gallery" in line
    assert all(str(victim) in line for victim in victims)
