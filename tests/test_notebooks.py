"""The tutorials in ``notebooks/`` run top to bottom in a real kernel, and are committed clean.

Each notebook is executed with nbclient in a fresh ``python3`` kernel (the one installed with
this environment), in a scratch working directory. A notebook fails its test on any error
output or anything written to stderr, and unless each live view it names was saved with the
whole run: nbclient saves the widget state the kernel sent under a running cell, which a view
sends again by itself when its run ends.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
TUTORIALS = (
    "01-quickstart",
    "02-redis-many-processes",
    "03-tracing-your-agent",
    "04-dockfile-config",
    "05-frameworks",
)
CELL_TIMEOUT = 60  # seconds per cell; the slowest tutorial cell takes a few seconds
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# A view each tutorial must end with: (run id pattern, status, whole run). "Whole run" means the
# view holds every event of the run (event_count == last_sequence) and has sent all of them to
# the front end (sent_upto == last_sequence); a filtered view only needs some events. nbclient
# keeps only messages of the running cell: a view sends its final state again under the
# kernel's latest request when its run ends, so no tutorial needs to call send_state().
EXPECTED_VIEWS: dict[str, list[tuple[str, str, bool]]] = {
    "01-quickstart": [("quickstart-2", "complete", True)],
    "02-redis-many-processes": [("tour-*", "complete", True)],
    "03-tracing-your-agent": [("agent-sync-*", "complete", True)],
    "04-dockfile-config": [("dockfile-run", "complete", True)],
    "05-frameworks": [
        ("frameworks-langgraph", "complete", True),
        ("frameworks-openai", "complete", True),
        ("frameworks-otel", "complete", True),
    ],
}


def notebook_path(name: str) -> Path:
    return NOTEBOOK_DIR / f"{name}.ipynb"


def saved_views(nb: Any) -> list[dict[str, Any]]:
    """The RunView states nbclient saved with the executed notebook."""
    models = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    keys = ("run_id", "status", "event_count", "last_sequence", "sent_upto", "connection")
    return [
        {"model_id": model_id, **{k: m["state"].get(k) for k in keys}}
        for model_id, m in models.items()
        if m.get("model_name") == "AnyModel" and "run_id" in m.get("state", {})
    ]


def static_views(nb: Any) -> dict[str, str]:
    """The static HTML saved next to each widget output (what GitHub shows), by model id."""
    found = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            view = data.get("application/vnd.jupyter.widget-view+json")
            if view and "text/html" in data:
                found[view["model_id"]] = data["text/html"]
    return found


def received(view: dict[str, Any], whole: bool) -> bool:
    """The view got events; with ``whole``, every event of the run, all sent to the front end."""
    if view["event_count"] <= 0:
        return False
    if not whole:
        return True
    return bool(view["event_count"] == view["last_sequence"] == view["sent_upto"])


def problems_in_outputs(nb: Any) -> list[str]:
    """Error outputs and stderr text, each with the start of the cell it came from."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = f"cell {index} ({cell.source.splitlines()[0][:60] if cell.source else ''!r})"
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                found.append(f"{where}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and out.name == "stderr":
                found.append(f"{where} wrote to stderr: {out.text[:500]}")
    return found


def execute(name: str, workdir: Path) -> Any:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(notebook_path(name), as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        allow_errors=False,
        store_widget_state=True,
        resources={"metadata": {"path": str(workdir)}},
    )
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{name} failed while running:\n{exc}")
    return nb


def test_every_tutorial_is_there() -> None:
    found = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert found == sorted(TUTORIALS)


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_is_committed_clean(name: str) -> None:
    nb = nbformat.read(notebook_path(name), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert "widgets" not in nb.metadata, (
        "saved widget state: delete metadata.widgets (JupyterLab: turn off Settings > Save "
        "Widget State Automatically, then save)"
    )
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"cells {dirty} have outputs or execution counts: clear them (JupyterLab: Edit > Clear "
        f"Outputs of All Cells; or jupyter nbconvert --clear-output --inplace {name}.ipynb)"
    )


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_runs_top_to_bottom(name: str, tmp_path: Path) -> None:
    nb = execute(name, tmp_path)

    problems = problems_in_outputs(nb)
    assert not problems, "\n".join(problems)

    views = saved_views(nb)
    statics = static_views(nb)
    assert views, f"{name}: no RunView state was saved"
    for pattern, status, whole in EXPECTED_VIEWS[name]:
        matching = [v for v in views if fnmatch.fnmatchcase(v["run_id"], pattern)]
        assert matching, f"{name}: no view of a run matching {pattern!r} in {views!r}"
        good = [v for v in matching if v["status"] == status and received(v, whole)]
        assert good, f"{name}: no view of {pattern!r} ended {status!r} with its events: {matching}"
        # its output's static HTML (what GitHub shows of the saved notebook) is final too
        shown = [statics[v["model_id"]] for v in good if v["model_id"] in statics]
        final = [h for h in shown if f"&middot; {status} &middot; " in h]
        assert final, f"{name}: the static view of {pattern!r} is not final: {shown}"

    # Processes a tutorial starts, it stops: its last cell names them "(pid N)".
    last = nb.cells[-1]
    text = "".join(o.get("text", "") for o in last.get("outputs", []) if "text" in o)
    for pid in (int(p) for p in re.findall(r"\bpid (\d+)\b", text)):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
