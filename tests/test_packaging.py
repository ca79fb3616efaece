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


def run_python(code: str, **env) -> str:
    """``code`` in a fresh interpreter (nothing imported yet); its stdout, after asserting it succeeded."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert done.returncode == 0, done.stderr
    return done.stdout


HEAVY = ("torch", "timm", "torchvision", "torch_pruning", "numpy")


def test_import_chex_tune_and_the_cli_parser_load_no_torch():
    code = ("import sys, chex_tune\nversion = chex_tune.__version__\n"
            "from chex_tune.cli import build_parser\nbuild_parser()\n"  # what `chex-tune --version` runs
            "import chex_tune.config\nchex_tune.config.TrainConfig()\n"
            f"print(version, [name for name in {HEAVY!r} if name in sys.modules])")
    assert run_python(code).split() == ["0.1.0", "[]"]


def test_the_facade_names_load_on_first_use_and_timm_imports_after_chex_tune():
    code = ("import sys, chex_tune\n"
            "from chex_tune import ChannelExplorer, ChexConfig, load_compact, save_compact\n"
            "from chex_tune.config import ChexConfig as FromConfig\n"
            "from chex_tune.core.compact import load_compact as core_load\n"
            "assert FromConfig is ChexConfig and core_load is load_compact\n"
            "assert ChannelExplorer.__module__ == 'chex_tune.core.explorer'\n"
            "import timm\n"  # torchvision through timm: the import fix ran first, wherever it is needed
            "print('chex_tune._torchvision_fix' in sys.modules, 'timm' in sys.modules)")
    assert run_python(code).split() == ["True", "True"]


def test_import_timm_works_in_the_venv_without_importing_chex_tune_first(tmp_path):
    """A user's own script in the project's venv starts with ``import timm``: scripts/setup.sh's .pth file applies the
    torchvision import fix at interpreter start (CPU torch beside the registry's CUDA torchvision)."""
    import sysconfig

    pth = Path(sysconfig.get_paths()["purelib"]) / "chex_tune_torchvision_fix.pth"
    assert pth.read_text().startswith("import sys; exec(\"try:\\n    import chex_tune"), "run scripts/setup.sh"
    code = "import timm\nmodel = timm.create_model('test_resnet', num_classes=3)\nprint(type(model).__name__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ResNet"]


def test_load_compact_rebuilds_a_small_stem_model_without_importing_train_first(tmp_path):
    """The small-stem builder lives in core: a fresh process needs only ``chex_tune.load_compact``, and train stays
    unimported."""
    import torch

    from chex_tune import ChannelExplorer, save_compact
    from chex_tune.train.models import SMALL_STEM_BUILDER, create_model

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, in_chans=1, stem="small")
    x = torch.randn(2, 1, 16, 16)
    ex = ChannelExplorer(model, x, sparsity=0.5, regrow_ratio=0.0, total=4, builder=SMALL_STEM_BUILDER,
                         model_name="resnet18", model_kwargs={"num_classes": 3, "in_chans": 1})
    small = ex.compact().eval()
    save_compact(small, tmp_path / "compact.pt")
    torch.save({"x": x, "y": small(x).detach()}, tmp_path / "io.pt")
    code = ("import sys, torch\nfrom chex_tune import load_compact\n"
            f"small = load_compact({str(tmp_path / 'compact.pt')!r})\n"
            f"io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)\n"
            "with torch.no_grad():\n    same = torch.allclose(small(io['x']), io['y'], atol=1e-6)\n"
            "print(same, small.chex_recipe['builder'], 'chex_tune.train.models' in sys.modules)")
    assert run_python(code).split() == ["True", "timm-small-stem", "False"]


def test_core_imports_nothing_above_core():
    """core is usable with torch, timm and torch-pruning alone: it imports no chex_tune module outside it."""
    outside = set()
    for path in (ROOT / "chex_tune" / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            outside |= {f"{path.name}: {name}" for name in names
                        if name.split(".")[0] == "chex_tune" and not name.startswith("chex_tune.core")}
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(
                    r"chex_tune\.(train|tuning|cli)\b[\w.]*(:[\w.]+)?", node.value):  # nor by name, for importlib
                outside.add(f"{path.name}: {node.value!r}")
    assert not outside, f"core imports from above core: {sorted(outside)}"


def test_every_lazy_submodule_exists():
    import importlib.util

    import chex_tune

    assert all(importlib.util.find_spec(f"chex_tune.{name}") for name in chex_tune._SUBMODULES)
    assert chex_tune.units.format_count(1500) == "1.5K"
