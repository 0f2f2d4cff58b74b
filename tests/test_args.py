"""The authors' README command lines parse as typed, and the hyphenated spellings mean the same."""
import pytest

from reid.arguments import adaptation_parser
from reid.cluster import resolve_rho
from reid.experiment import resolve_model_options

README = ["--src_dataset", "market1501", "--tgt_dataset", "dukemtmc", "--resume", "logs/market1501", "--iteration",
          "30", "--data_dir", "data", "--logs_dir", "logs/m2d", "--gpu-devices", "0,1", "--num-split", "2"]
HYPHENATED = ["--src-dataset", "market1501", "--tgt-dataset", "dukemtmc", "--resume", "logs/market1501",
              "--iteration", "30", "--data-dir", "data", "--logs-dir", "logs/m2d", "--gpu_devices", "0,1",
              "--num_split", "2"]


def test_readme_and_hyphenated_spellings_agree():
    parser = adaptation_parser("", "selftraining")
    typed, hyphenated = parser.parse_args(README), parser.parse_args(HYPHENATED)
    assert vars(typed) == vars(hyphenated)
    assert (typed.src_dataset, typed.tgt_dataset, typed.iteration, typed.gpu_devices, typed.num_split) == (
        "market1501", "dukemtmc", 30, "0,1", 2)


def test_the_released_defaults():
    args = adaptation_parser("", "selftraining").parse_args(README)
    assert (args.batch_size, args.num_instances, args.lr, args.epochs, args.lambda_value, args.k1, args.k2,
            args.min_samples, args.seed, args.margin) == (128, 4, 6e-5, 70, 0.1, 20, 6, 4, 1, 0.5)
    # rho not given is the released value whatever the target's size, unless the images per person are given
    assert (args.rho, args.images_per_identity) == (None, None)
    assert resolve_rho(args.rho, args.images_per_identity, 16_522)[0] == 1.6e-3
    # model options not given stay unset until a checkpoint (or, without one, the paper) settles them
    assert (args.arch, args.height, args.width, args.features) == (None, None, None, None)
    resolve_model_options(args, None)
    assert (args.arch, args.height, args.width, args.features, args.num_split) == ("resnet50", 256, 128, 2048, 2)


def test_single_word_options_have_one_spelling():
    option_strings = [a.option_strings for a in adaptation_parser("", "selftraining")._actions]
    assert ["--seed"] in option_strings and ["-a", "--arch"] in option_strings


def test_a_print_freq_below_one_is_one_line_and_exit_2(capsys):
    parser = adaptation_parser("", "selftraining")
    for value in ("0", "-3", "ten"):
        with pytest.raises(SystemExit) as stopped:
            parser.parse_args([*README, "--print-freq", value])
        assert stopped.value.code == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and f"--print_freq: expected a positive integer, got '{value}'" in error
    assert parser.parse_args([*README, "--print_freq", "3"]).print_freq == 3
