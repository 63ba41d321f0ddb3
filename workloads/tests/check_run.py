"""Checks one workload run against the contract in workloads/README.md.

Usage: check_run.py --trace FILE --stdout FILE --phases REGEX
                    [--keys k1,k2] [--min-phase NAME=SECONDS ...]

REGEX is matched against the run's phase names in order, repeats
collapsed, joined by commas, ending with "end". Prints the checksum on
success; prints what is wrong and exits 1 otherwise.
"""
import argparse
import json
import re
import sys

SAMPLE_KEYS = {"t", "live", "phase"}
END_KEYS = {"t", "phase", "live", "result"}
COMMON_RESULT_KEYS = ["workload", "seed", "scale", "elapsed_s", "peak_live",
                      "final_live", "checksum", "held_bytes"]
# The sampler writes every 10 ms. A busy machine delays it by a few tenths
# of a second (0.4 s seen under glibc with the suite running beside);
# a sampler stuck for a second is a hole in the plots.
MAX_GAP_S = 1.0
MIN_LINES_PER_S = 20  # the contract


def fail(msg: str) -> None:
    print(f"check_run: {msg}", file=sys.stderr)
    sys.exit(1)


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_trace(path: str) -> list:
    with open(path) as f:
        text = f.read()
    if not text.endswith("\n"):
        fail(f"{path}: does not end with a newline")
    lines = []
    for n, raw in enumerate(text.split("\n")[:-1], 1):
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            fail(f"{path}:{n}: not JSON ({e}): {raw!r}")
        if not isinstance(obj, dict):
            fail(f"{path}:{n}: not a JSON object")
        lines.append(obj)
    if len(lines) < 2:
        fail(f"{path}: fewer than two lines")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", required=True)
    ap.add_argument("--stdout", required=True)
    ap.add_argument("--phases", required=True)
    ap.add_argument("--keys", default="")
    ap.add_argument("--min-phase", action="append", default=[])
    args = ap.parse_args()

    lines = load_trace(args.trace)
    samples, end = lines[:-1], lines[-1]
    for n, s in enumerate(samples, 1):
        if set(s) != SAMPLE_KEYS:
            fail(f"line {n}: keys {sorted(s)}, want {sorted(SAMPLE_KEYS)}")
        if not is_num(s["t"]) or s["t"] < 0:
            fail(f"line {n}: bad t {s['t']!r}")
        if not is_int(s["live"]) or s["live"] < 0:
            fail(f"line {n}: bad live {s['live']!r}")
        if not isinstance(s["phase"], str) or not s["phase"] or s["phase"] == "end":
            fail(f"line {n}: bad phase {s['phase']!r}")
    if set(end) != END_KEYS or end["phase"] != "end":
        fail(f"last line: keys {sorted(end)} / phase {end.get('phase')!r}, want an end line")
    result = end["result"]
    if not isinstance(result, dict):
        fail("last line: result is not an object")

    times = [x["t"] for x in lines]
    for i in range(1, len(times)):
        if times[i] < times[i - 1]:
            fail(f"line {i + 1}: t goes back from {times[i - 1]} to {times[i]}")
    gaps = [b - a for a, b in zip(times, times[1:])]
    if max(gaps) > MAX_GAP_S:
        at = gaps.index(max(gaps)) + 1
        fail(f"line {at + 1}: {max(gaps):.3f} s without a trace line")
    duration = times[-1] - times[0]
    if duration >= 0.2 and len(lines) / duration < MIN_LINES_PER_S:
        fail(f"{len(lines)} lines in {duration:.2f} s: fewer than {MIN_LINES_PER_S} a second")

    phases = []
    for s in samples:
        if not phases or phases[-1] != s["phase"]:
            phases.append(s["phase"])
    seq = ",".join(phases + ["end"])
    if not re.fullmatch(args.phases, seq):
        fail(f"phases {seq!r} do not match {args.phases!r}")
    if len(set(phases)) != len(phases):
        fail(f"a phase starts twice: {seq!r}")

    wanted = COMMON_RESULT_KEYS + [k for k in args.keys.split(",") if k]
    missing = [k for k in wanted if k not in result]
    if missing:
        fail(f"result lacks {missing}")
    if not re.fullmatch(r"[0-9a-f]{16}", str(result["checksum"])):
        fail(f"checksum {result['checksum']!r} is not 16 hex digits")

    with open(args.stdout) as f:
        out = f.read().strip().split("\n")
    try:
        printed = json.loads(out[-1])
    except (json.JSONDecodeError, IndexError):
        fail("the last line of stdout is not JSON")
    if printed != result:
        fail("the result printed on stdout differs from the trace's")

    # Live-bytes ground truth: what the workload counted when teardown began
    # equals what it finds by walking its data, and it frees everything.
    teardown = next((s for s in samples if s["phase"] == "teardown"), None)
    if teardown is None:
        fail("no teardown phase")
    if teardown["live"] != result["held_bytes"]:
        fail(f"live bytes at teardown {teardown['live']} != held_bytes {result['held_bytes']}")
    if end["live"] != 0 or result["final_live"] != 0:
        fail(f"final live bytes {end['live']} / {result['final_live']}, want 0")
    top = max(s["live"] for s in samples)
    if result["peak_live"] < top:
        fail(f"peak_live {result['peak_live']} below a sampled {top}")

    starts = {}
    for s in samples:
        starts.setdefault(s["phase"], s["t"])
    order = phases + ["end"]
    starts["end"] = end["t"]
    for spec in args.min_phase:
        name, _, secs = spec.partition("=")
        if name not in starts:
            fail(f"no phase {name}")
        nxt = order[order.index(name) + 1]
        took = starts[nxt] - starts[name]
        if took < float(secs):
            fail(f"phase {name} lasted {took:.3f} s, want at least {secs}")

    print(result["checksum"])


if __name__ == "__main__":
    main()
