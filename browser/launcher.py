#!/usr/bin/python3
"""Run the benchmark page in WebKitGTK and print what it reported, as JSON.

    /usr/bin/python3 browser/launcher.py --url http://127.0.0.1:PORT/runner/index.html?...

A GTK 3 window holding a WebKit2 4.1 web view (Debian's gir1.2-webkit2-4.1;
run it under Xvfb when there is no display). The page posts its result to
the "result" script message handler; the launcher then closes the view and
waits for WebKit's helper processes to exit before it exits itself, so that
every process runs its exit handlers (libmesh prints MALLOCSTATS there).

WebKit starts a network process and a web process as children of this one,
with this process's environment and standard error at the moment each is
spawned. With --logs DIR the launcher points MESH_EVENTS and standard
error of each at a file of its own (events-network.jsonl and network.log,
then events-web.jsonl and web.log), so that the mesh log and the exit
statistics of the web process are its own; the launcher's own stay where
its caller put them. With --settle S the idle page stays open S seconds
after its result (memory after the run). The last line printed is the
JSON result: the page's report, plus every helper process seen (pid, name,
its environment's LD_PRELOAD and Malloc, and which malloc libraries it has
mapped) and when the result came and the view was closed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time

import gi

gi.require_version("Gtk", "3.0")
gi.require_version("WebKit2", "4.1")
from gi.repository import GLib, Gtk, WebKit2  # noqa: E402

# /proc/PID/comm is cut to 15 characters.
NETWORK_COMM = "WebKitNetworkPr"
WEB_COMM = "WebKitWebProces"
MALLOC_LIBRARIES = ("libmesh", "libjemalloc", "libmimalloc", "libtcmalloc")


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of the live processes whose parent is pid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # comm is in parentheses and may itself hold spaces or ')'
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append((int(d), comm))
    return out


def describe_process(pid: int, comm: str) -> dict:
    """What a helper process runs with: its preload, Malloc, mapped malloc libraries."""
    info = {"pid": pid, "comm": comm, "preload": None, "malloc_env": None, "mapped": []}
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for entry in f.read().split(b"\0"):
                k, _, v = entry.decode(errors="replace").partition("=")
                if k == "LD_PRELOAD":
                    info["preload"] = v
                elif k == "Malloc":
                    info["malloc_env"] = v
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
            paths = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
    except OSError as e:
        info["error"] = str(e)
        return info
    info["mapped"] = sorted(p for p in paths
                            if any(os.path.basename(p).startswith(n) for n in MALLOC_LIBRARIES))
    return info


def pin_own_event_log() -> None:
    """libmesh opens MESH_EVENTS at its first mesh pass; make that happen now,
    under this process's own setting, before the launcher changes the
    variable for the processes it spawns (no-op without libmesh)."""
    try:
        mallctl = ctypes.CDLL(None).mesh_mallctl
    except AttributeError:
        return
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                        ctypes.c_size_t]
    mallctl(b"mesh.compact", None, None, None, 0)


class ChildLogs:
    """Standard error and MESH_EVENTS for the helper processes spawned next."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.saved_stderr = os.dup(2)

    def point_at(self, role: str) -> None:
        os.environ["MESH_EVENTS"] = os.path.join(self.directory, f"events-{role}.jsonl")
        fd = os.open(os.path.join(self.directory, f"{role}.log"),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stderr.flush()
        os.dup2(fd, 2)
        os.close(fd)

    def restore_stderr(self) -> None:
        sys.stderr.flush()
        os.dup2(self.saved_stderr, 2)


def wait_until(predicate, timeout_s: float) -> bool:
    """Run the GLib main loop until predicate() holds or timeout_s passes."""
    deadline = time.monotonic() + timeout_s
    ctx = GLib.MainContext.default()
    # A tick so that the blocking iteration below looks at the clock and
    # at /proc (new helper processes send no event) ten times a second.
    tick = GLib.timeout_add(100, lambda: True)
    try:
        while not predicate():
            if time.monotonic() > deadline:
                return False
            ctx.iteration(True)
        return True
    finally:
        GLib.source_remove(tick)


def has_child(comm: str) -> bool:
    return any(c == comm for _, c in children(os.getpid()))


class Launcher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.result: dict | None = None
        self.error: str | None = None
        self.seen: dict[int, dict] = {}
        self.logs = ChildLogs(args.logs) if args.logs else None

    def note_processes(self) -> None:
        """Record each helper's mappings while it runs (the page's end)."""
        for pid, comm in children(os.getpid()):
            if comm in (NETWORK_COMM, WEB_COMM):
                self.seen[pid] = describe_process(pid, comm)

    def start_network_process(self, context: WebKit2.WebContext) -> None:
        if self.logs:
            self.logs.point_at("network")
        # Asking for a DNS prefetch is what makes WebKit spawn its network process.
        context.prefetch_dns("localhost")
        if not wait_until(lambda: has_child(NETWORK_COMM), 30):
            self.error = "WebKit's network process did not start"

    def on_message(self, _manager, js_result) -> None:
        text = js_result.get_js_value().to_string()
        try:
            self.result = json.loads(text)
        except json.JSONDecodeError:
            self.result = {}
            self.error = f"the page reported something that is not JSON: {text[:200]!r}"
        if isinstance(self.result, dict) and self.result.get("error"):
            self.error = f"the page failed: {self.result['error']}"

    def on_load_failed(self, _view, _event, uri, err) -> bool:
        self.error = f"loading {uri} failed: {err.message}"
        return False

    def open_page(self, context: WebKit2.WebContext) -> Gtk.Window:
        """A window with a web view loading the page, its web process started."""
        manager = WebKit2.UserContentManager()
        manager.register_script_message_handler("result")
        manager.connect("script-message-received::result", self.on_message)
        if self.logs:
            self.logs.point_at("web")
        view = WebKit2.WebView(web_context=context, user_content_manager=manager)
        view.get_settings().set_enable_write_console_messages_to_stdout(self.args.console)
        view.connect("load-failed", self.on_load_failed)
        window = Gtk.Window()
        window.set_default_size(1280, 900)
        window.add(view)
        window.show_all()
        view.load_uri(self.args.url)
        if not wait_until(lambda: has_child(WEB_COMM) or self.error, 30):
            self.error = self.error or "WebKit's web process did not start"
        if self.logs:
            self.logs.restore_stderr()
        return window

    def run(self) -> int:
        pin_own_event_log()
        context = WebKit2.WebContext.new()
        self.start_network_process(context)
        window = self.open_page(context)
        wait_until(lambda: self.result is not None or self.error is not None, self.args.timeout)
        result_at = time.monotonic()
        self.note_processes()
        if self.result is None and self.error is None:
            self.error = f"no result within {self.args.timeout:g} s"
        # The page idle, the browser still open: how much memory it keeps.
        if self.error is None and self.args.settle > 0:
            wait_until(lambda: False, self.args.settle)
        closing_at = time.monotonic()
        # Closing the view ends the web process; the network process goes
        # with the context. Both must exit on their own, not be killed.
        window.destroy()
        del window, context
        exited = wait_until(lambda: not children(os.getpid()), 30)
        out = dict(self.result or {})
        out["launcher"] = {"webkit": "%d.%d.%d" % (WebKit2.get_major_version(),
                                                   WebKit2.get_minor_version(),
                                                   WebKit2.get_micro_version()),
                           "processes": list(self.seen.values()),
                           "helpers_exited": exited, "error": self.error,
                           # CLOCK_MONOTONIC, which every process on the machine shares
                           "result_monotonic": result_at, "closing_monotonic": closing_at}
        print(json.dumps(out), flush=True)
        return 0 if self.error is None and exited else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="the page to run (it posts to 'result')")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the result")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="seconds to keep the idle page open after its result")
    ap.add_argument("--logs", help="directory for the helper processes' stderr and mesh logs")
    ap.add_argument("--console", action="store_true", help="the page's console messages to stdout")
    args = ap.parse_args()
    Gtk.init(None)
    return Launcher(args).run()


if __name__ == "__main__":
    sys.exit(main())
