"""The layers of the package: ``reid/utils/`` is the bottom one and imports no other ``reid`` package.

Every import is read from the source with ``ast``, wherever it stands (module level, inside a function, under
``TYPE_CHECKING``), relative imports resolved, so that a helper that reaches up to the models or the datasets
cannot hide from the check.
"""
import ast
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent


def module_name(path: Path, root: Path) -> str:
    """``<root>/reid/utils/data/loaders.py`` -> ``reid.utils.data.loaders``; a package is named by its folder."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = REPO_DIR) -> set[str]:
    """Every module ``path`` imports, absolute; ``from package import name`` counts as ``package.name``."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            imported.update(f"{base}.{alias.name}" for alias in node.names)
    return imported


def is_above_utils(module: str) -> bool:
    return (module == "reid" or module.startswith("reid.")) and not (
        module == "reid.utils" or module.startswith("reid.utils."))


def test_the_reader_sees_imports_inside_functions_and_relative_ones(tmp_path):
    helper = tmp_path / "reid" / "utils" / "helper.py"
    helper.parent.mkdir(parents=True)
    helper.write_text("import os\nfrom . import osutils\n\n\ndef build():\n    from ..models import create\n")

    imported = imported_modules(helper, tmp_path)

    assert imported == {"os", "reid.utils.osutils", "reid.models.create"}
    assert [module for module in imported if is_above_utils(module)] == ["reid.models.create"]


def test_no_module_under_utils_imports_a_reid_package_above_it():
    upward = sorted(f"{module_name(path, REPO_DIR)} imports {module}"
                    for path in (REPO_DIR / "reid" / "utils").rglob("*.py")
                    for module in imported_modules(path) if is_above_utils(module))

    assert not upward, "reid/utils/ is the bottom layer; move these to the layer above:\n" + "\n".join(upward)
