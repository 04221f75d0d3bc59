"""The wheel built from a clean clone ships the widget's front end, and RunView loads it from
the installed files (no Node.js, no build step, nothing read from the source tree)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import require

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHECK = """
import json, pathlib, sys
target = pathlib.Path(sys.argv[1])
import dockrion_nb, dockrion_nb.widget as w
from dockrion_nb.engine import Engine
engine = Engine()
view = w.RunView("wheel-check", engine=engine)
static = target / "dockrion_nb" / "static"
print(json.dumps({
    "package": str(pathlib.Path(dockrion_nb.__file__).resolve()),
    "esm_path": str(w.ESM_PATH),
    "css_path": str(w.CSS_PATH),
    "esm_is_installed_file": view._esm == (static / "widget.js").read_text(),
    "css_is_installed_file": view._css == (static / "widget.css").read_text(),
}))
view.close()
engine.shutdown()
"""


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kwargs)
    assert proc.returncode == 0, f"{cmd[:4]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def test_wheel_from_a_clean_clone_ships_and_loads_the_front_end(tmp_path: Path) -> None:
    require(shutil.which("git") is not None and (ROOT / ".git").exists(), "needs a git checkout")
    require(
        importlib.util.find_spec("build") is not None
        and importlib.util.find_spec("hatchling") is not None,
        "needs the 'build' and 'hatchling' packages (pip install build hatchling)",
    )
    src = tmp_path / "src"
    run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(src)])
    assert not (src / "dockrion_nb" / "static").exists()  # the asset lives only in js/

    dist = tmp_path / "dist"
    run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(dist),
            str(src),
        ]
    )
    wheels = list(dist.glob("dockrion_nb-*.whl"))
    assert len(wheels) == 1
    with zipfile.ZipFile(wheels[0]) as zf:
        names = set(zf.namelist())
        assert "dockrion_nb/static/widget.js" in names
        assert "dockrion_nb/static/widget.css" in names
        assert zf.read("dockrion_nb/static/widget.js") == (src / "js" / "widget.js").read_bytes()
        assert zf.read("dockrion_nb/static/widget.css") == (src / "js" / "widget.css").read_bytes()
        assert "dockrion_nb/widget.py" in names
        assert not any(n.startswith(("js/", "tests/")) for n in names)

    target = tmp_path / "installed"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheels[0]),
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = run([sys.executable, "-c", CHECK, str(target)], env=env, cwd=str(tmp_path))
    info = json.loads(out.stdout.strip().splitlines()[-1])
    static = (target / "dockrion_nb" / "static").resolve()
    assert info["package"].startswith(str(target.resolve()))  # not the source checkout
    assert info["esm_path"] == str(static / "widget.js")
    assert info["css_path"] == str(static / "widget.css")
    assert info["esm_is_installed_file"] and info["css_is_installed_file"]
