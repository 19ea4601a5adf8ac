"""Peak resident memory of ``keras-fr demo`` (what ``make demo`` runs; issue 17's goal: at most 4 GB).

The demo runs as a child process (``keras_fr.cli.main(["demo", ...])``; arguments after ``--`` are
passed on). Two figures are reported:

- **peak process**: the largest resident set any one process of the demo reached, from the kernel's
  own high-water mark (``ru_maxrss`` of the waited-for children, in KiB on Linux);
- **peak tree**: the largest sum of ``VmRSS`` over the demo and every process it started, sampled every
  ``--interval`` seconds from ``/proc`` (a sampled figure: a spike shorter than the interval can be
  missed, so it is a lower bound; it matters only if the demo starts processes of its own).

Usage:
    python benchmarks/demo_memory.py                   # the full demo, as `make demo` runs it
    python benchmarks/demo_memory.py -- --quick        # the quick demo
    python benchmarks/demo_memory.py --goal-gb 4 -- --skip export

Prints one line per figure and writes benchmarks/results/demo_memory.json.
"""

import argparse
import os
import pathlib
import re
import resource
import subprocess
import sys
import threading
import time

import _bench  # noqa: E402  (quiet logs, TensorFlow backend, project root on sys.path)
from _bench import write_json  # noqa: E402

RESULTS = pathlib.Path(_bench.RESULTS) / "demo_memory.json"


def _rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid):
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


def tree_rss_kib(root):
    """Sum of VmRSS over ``root`` and all its descendants (KiB)."""
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _rss_kib(pid)
        stack += _children(pid)
    return total


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    raw = list(argv)
    demo_args = []
    if "--" in argv:
        cut = argv.index("--")
        argv, demo_args = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between /proc samples")
    parser.add_argument("--goal-gb", type=float, default=4.0, help="the goal to compare with (GB = 2**30 bytes)")
    parser.add_argument("--output", default=str(RESULTS), help="JSON results file")
    args = parser.parse_args(argv)
    if not args.interval > 0:
        parser.error(f"--interval must be > 0; got {args.interval}")

    command = [sys.executable, "-c", "import sys; from keras_fr.cli import main; sys.exit(main(sys.argv[1:]))",
               "demo", *demo_args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_bench.ROOT, os.environ.get("PYTHONPATH")])))
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_tree = 0
    lines = []  # the demo's output
    stage_starts = []  # (time, stage name) from its "[i/n] stage" lines
    samples = []  # (time, tree RSS in KiB)

    def read():
        for line in proc.stdout:
            lines.append(line)
            match = re.match(r"\[\d+/\d+\] (\S.*)$", line.strip())
            if match:
                stage_starts.append((time.perf_counter(), match.group(1)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        rss = tree_rss_kib(proc.pid)
        samples.append((time.perf_counter(), rss))
        peak_tree = max(peak_tree, rss)
        time.sleep(args.interval)
    reader.join()
    stage_peaks = {}  # stage -> largest sampled tree RSS (GB) while it ran; "start-up" before the first
    for t, rss in samples:
        stage = "start-up"
        for started_at, name in stage_starts:
            if started_at <= t:
                stage = name
        stage_peaks[stage] = max(stage_peaks.get(stage, 0.0), rss / 2**20)
    seconds = time.perf_counter() - started
    peak_process = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    gib = 2**20
    result = {
        **_bench.result_header("demo_memory", raw),
        "demo_command": " ".join(["keras-fr", "demo", *demo_args]),
        "returncode": proc.returncode,
        "seconds": seconds,
        "peak_process_gb": peak_process / gib,
        "peak_tree_gb_sampled": peak_tree / gib,
        "peak_tree_gb_by_stage": stage_peaks,
        "goal_gb": args.goal_gb,
        "goal_met": proc.returncode == 0 and max(peak_process, peak_tree) / gib <= args.goal_gb,
        "demo_output_tail": "".join(lines[-40:]),
    }
    print("".join(lines[-40:]), end="")
    print(f"demo exit code {proc.returncode}, {seconds / 60:.1f} min")
    print(f"peak process {result['peak_process_gb']:.2f} GB; peak tree (sampled every {args.interval:g} s) "
          f"{result['peak_tree_gb_sampled']:.2f} GB; goal <= {args.goal_gb:g} GB: "
          f"{'met' if result['goal_met'] else 'not met'}")
    print("sampled peak by stage: " + ", ".join(f"{k} {v:.2f} GB" for k, v in stage_peaks.items()))
    write_json(args.output, result)
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
