"""What a user installs: the wheel holds every module and the shipped search spaces, and every package
chex_tune imports is declared in pyproject.toml."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# import name -> distribution, for optional imports that may not be installed here
KNOWN = {"pytorch_lightning": "lightning"}  # the older name of Lightning, tried after `lightning`


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"].values()
    requirements = [*project["dependencies"], *(r for extra in extras for r in extra)]
    return {canonical(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]) for requirement in requirements}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level names imported anywhere in chex_tune that are neither the standard library nor chex_tune."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "chex_tune").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "chex_tune":
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_third_party_package_is_declared():
    distributions = packages_distributions()
    imports = third_party_imports()
    assert {"torch", "timm", "torch_pruning", "yaml", "tqdm", "mlflow", "optuna", "ray"} <= set(imports)
    missing = {}
    for name, files in imports.items():
        dists = {canonical(d) for d in distributions.get(name, [])} or {canonical(KNOWN.get(name, name))}
        if name in KNOWN:
            dists.add(canonical(KNOWN[name]))
        if not dists & declared():
            missing[name] = sorted(files)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def build_wheel(tmp_path: Path) -> Path:
    """``pip wheel`` of a copy of the checkout (offline: no build isolation, the venv's setuptools)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("chex_tune", "search_spaces"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("chex_tune-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_holds_every_module_and_the_search_spaces(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "chex_tune").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules and not modules - names, f"missing from the wheel: {sorted(modules - names)}"
    spaces = {f"chex_tune/search_spaces/{p.name}" for p in (ROOT / "search_spaces").glob("*.yaml")}
    assert "chex_tune/search_spaces/fashion_mnist_resnet18.yaml" in spaces and spaces <= names
    assert "chex_tune/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "scripts/", "mlflow/", "search_spaces/"))]
    info = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(wheel).read(info).decode()
    for requirement in ("torch>=2.3", "timm>=1.0", "torch-pruning", "pyyaml>=6", "tqdm>=4", "torchvision"):
        assert f"Requires-Dist: {requirement}" in metadata
    entry_points = zipfile.ZipFile(wheel).read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "chex-tune = chex_tune.cli:main" in entry_points


def test_an_installed_wheel_finds_its_search_spaces_by_name(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import chex_tune, pathlib\nfrom chex_tune.tuning.space import SEARCH_SPACES_DIR, SearchSpace\n"
            "space = SearchSpace.load('fashion_mnist_resnet18')\n"
            "print(pathlib.Path(chex_tune.__file__).parent, SEARCH_SPACES_DIR, space.source, sep='\\n')")
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    package, spaces, source = done.stdout.strip().splitlines()[-3:]
    assert package == str(site / "chex_tune")  # the wheel's copy, not the checkout
    assert spaces == str(site / "chex_tune" / "search_spaces")
    assert source == str(site / "chex_tune" / "search_spaces" / "fashion_mnist_resnet18.yaml")
