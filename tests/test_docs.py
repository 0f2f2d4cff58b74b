"""Every command the shell blocks of README.md and docs/ show runs as written: its script or module exists and its
parser accepts the options (the authors' placeholders filled in). Parsing stops the command before it does any
work."""
import argparse
import importlib
import inspect
import re
import shlex
import sys

import pytest
from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# The authors' README writes its commands with these placeholders.
PLACEHOLDERS = {
    "<name_of_source_dataset>": "dukemtmc", "<name_of_target_dataset>": "market1501",
    "<dir_of_source_trained_model>": "logs/dukemtmc", "<dir_of_source_data>": "data",
    "<dir_to_save_source_trained_model>": "logs/dukemtmc", "<number of iteration>": "30",
    "<dir_of_source_target_data>": "data", "<dir_to_save_model_after_adaptation>": "logs/duke2market",
    "<gpu ids>": "0,1", "<number of split>": "2", "<sample method>": "cluster",
    # the pages' example of one's own crops: a target folder must exist to parse
    "/data/my_crops": str(REPO / "figs"),
}
LAUNCHERS = ("python", "torchrun")


class Parsed(Exception):
    """Raised once a command's arguments are parsed: the command went far enough."""


def shown_commands() -> list[tuple[str, str]]:
    """(page, command) for every Python or torchrun command of a shell block, continuation lines joined."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```shell\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = line.split(" #")[0].strip()
                if command.split(" ")[0] in LAUNCHERS:
                    found.append((page.name, command))
    return found


def module_and_argv(command: str) -> tuple[str, list[str]]:
    """The module a command runs and its arguments (environment assignments and torchrun's options dropped)."""
    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value)
    words = [word for word in shlex.split(command) if not re.fullmatch(r"[A-Z_]+=\S*", word)]
    launcher, *rest = words
    if launcher == "torchrun":
        script = next(i for i, word in enumerate(rest) if word.endswith(".py"))
        return rest[script][:-3], rest[script + 1:]
    if rest[0] == "-m":
        return rest[1], rest[2:]
    return rest[0][:-3].replace("/", "."), rest[1:]


@pytest.fixture
def stop_after_parsing(monkeypatch):
    parse = argparse.ArgumentParser.parse_known_args

    def parse_then_stop(self, args=None, namespace=None):
        parse(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_then_stop)


def test_the_pages_show_the_commands_users_type():
    commands = " ".join(command for _, command in shown_commands())
    for expected in ("source_train.py", "selftraining.py", "semitraining.py", "reid.report", "reid.extract",
                     "benchmarks.demo_seeds", "benchmarks.ssg_study"):
        assert expected in commands


@pytest.mark.parametrize(("page", "command"), shown_commands())
def test_a_shown_command_parses(page, command, stop_after_parsing, monkeypatch):
    module, argv = module_and_argv(command)
    source = REPO / (module.replace(".", "/") + ".py")
    if not source.is_file():  # a tool the project installs (pytest)
        assert importlib.util.find_spec(module), f"{page}: {command}: no module {module}"
        return
    main = importlib.import_module(module).main
    if not inspect.signature(main).parameters and "argparse" not in source.read_text():
        assert argv == [], f"{page}: {command}: {module} takes no options"  # figs/draw_framework.py
        return
    with pytest.raises(Parsed):
        if inspect.signature(main).parameters:
            main(argv)
        else:  # reads sys.argv itself
            monkeypatch.setattr(sys, "argv", [module, *argv])
            main()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_of_a_page_resolves(page):
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    missing = [link for link in links if not link.startswith("http") and not (page.parent / link).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"
