"""The wheel installs one import namespace, rqscope, so it never shadows a user's `tasks` module."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_has_one_top_level_package(tmp_path: Path) -> None:
    # a clean copy of the tracked tree: a build/ or egg-info left in the work tree would hide a package
    # that pyproject.toml fails to list
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    source = tmp_path / "source"
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("rqscope-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"rqscope"}
    sources = {
        f"rqscope/{path.relative_to(source)}"
        if path.parts[len(source.parts)] != "rqscope"
        else str(path.relative_to(source))
        for folder in ("rqscope", "tasks", "monitor", "web")
        for path in (source / folder).rglob("*")
        if path.is_file() and path.suffix in (".py", ".yml", ".html", ".js", ".css") and "__pycache__" not in path.parts
    }
    assert sources - set(names) == set()  # every module, template and rules file of the tree is shipped
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "rqscope = rqscope.web.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_a_users_own_tasks_module_is_not_shadowed(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text("from rqscope import task\n\n@task()\ndef mine(x):\n    return x\n")
    code = "import tasks, rqscope.tasks; print(tasks.__file__); print(rqscope.tasks.REGISTRY.get('mine').func_path)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [str(tmp_path / "tasks.py"), "tasks.mine"]
