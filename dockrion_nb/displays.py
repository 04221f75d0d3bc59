"""The notebook displays of one widget, and sending to them from the engine's thread.

Why: a saved notebook (nbconvert, nbviewer, GitHub) shows a widget's static text/HTML, not the
widget. A view is therefore shown with a display id, remembered with what its static HTML
depended on, and updated once that has changed (the run ended), under the kernel's latest
request so that nbclient records the update. ``RunView`` and ``CompareView`` share this.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

Bundle = tuple[dict[str, Any], dict[str, Any]]


Key = Callable[[], tuple[Any, ...]]


class Displays:
    """Each display of one widget, with the static key it was last drawn with. The widget
    passes its ``key`` (what its static HTML depends on: an unchanged key means final) and its
    ``bundle`` (the mime bundle: widget view and static text/HTML) to each call, so that this
    holds no reference back to it."""

    def __init__(self) -> None:
        self._shown: list[tuple[Any, tuple[Any, ...]]] = []
        self._lock = threading.Lock()

    def show(self, key: Key, bundle: Callable[[], Bundle]) -> None:
        """Display the widget with a display id, so its static part can be replaced later."""
        from IPython.display import display

        with self._lock:
            shown_key = key()
            data, metadata = bundle()
            handle = display(data, metadata=metadata, raw=True, display_id=True)  # type: ignore[no-untyped-call,unused-ignore]
            if handle is not None:
                self._shown.append((handle, shown_key))

    def refresh(self, key: Key, bundle: Callable[[], Bundle], force: bool = False) -> None:
        """Update every display whose key changed since it was drawn (all, with ``force``).
        A front end draws the widget again; what the user set lives in the page's store."""
        with self._lock:
            now = key()
            stale = [i for i, (_, shown) in enumerate(self._shown) if force or shown != now]
            if not stale:
                return
            data, metadata = bundle()
            with latest_parent():
                for i in stale:
                    handle = self._shown[i][0]
                    with contextlib.suppress(Exception):
                        handle.update(data, metadata=metadata, raw=True)
                    self._shown[i] = (handle, now)


@contextlib.contextmanager
def latest_parent() -> Iterator[None]:
    """Send display updates and comm messages from this thread under the kernel's latest
    request. ipykernel takes their parent from context variables, and the engine's task copied
    the context of the cell that created the view, long done; a front end that records
    messages per running cell (nbclient, so nbconvert and papermill) drops those."""
    undo: list[Callable[[], None]] = []
    with contextlib.suppress(Exception):
        from IPython import get_ipython

        shell = get_ipython()
        pub: Any = getattr(shell, "display_pub", None)
        latest = getattr(pub, "_parent_header_global", None)
        if latest and hasattr(pub, "set_thread_parent"):
            token = pub.set_thread_parent(latest)
            undo.append(lambda: pub.reset_thread_parent(token))
        # comm messages: the kernel's shell parent as of its last request (ipykernel >= 6.x)
        kernel = getattr(shell, "kernel", None)
        var = getattr(kernel, "_shell_parent", None)
        saved = getattr(kernel, "_shell_context", None)
        if var is not None and saved is not None and var in saved:
            comm_token = var.set(saved[var])
            undo.append(lambda: var.reset(comm_token))
    try:
        yield
    finally:
        for fn in reversed(undo):
            with contextlib.suppress(Exception):
                fn()


__all__ = ["Bundle", "Displays", "Key", "latest_parent"]
