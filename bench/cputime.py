#!/usr/bin/env python3
"""anychip next to its PyTorch twin by CPU time per training step, for a machine too busy for
wall-clock numbers (bench/compare.py's are only meaningful when the load average stays below
the core count).

Each side runs single-threaded (no barrier waits, so being descheduled costs no extra CPU time)
twice, with --steps S1 and S2, and its CPU time per step is the difference of the two runs'
CPU times (user + system, from the kernel's accounting of the child) over S2 - S1: start-up,
imports, model building and warm-up cancel out. Sides alternate, repeats give medians. What
remains load-dependent is cache and memory-bandwidth sharing with the other work, which hits
both sides alike. The result is tokens per CPU-second, one core, which is what a 1-thread
wall-clock run on an idle core would show.

  python3 bench/cputime.py --anychip PATH --python PYTHON_WITH_TORCH [--isa avx2] [--configs tiny]
"""
import argparse, os, statistics, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import CONFIGS, TWIN, isa_env  # noqa: E402


def cpu_seconds(cmd, env):
    """CPU seconds (user + system) the command used, or exit with its error."""
    pid = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).pid
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: {' '.join(cmd[:4])} ... failed (exit {os.waitstatus_to_exitcode(status)})")
    return usage.ru_utime + usage.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anychip", required=True)
    ap.add_argument("--python", default=sys.executable, help="the Python with torch")
    ap.add_argument("--configs", default="tiny")
    ap.add_argument("--isa", choices=["avx512", "avx2", "portable"])
    ap.add_argument("--steps", default="2,6", help="S1,S2: the two runs' timed steps")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    s1, s2 = (int(x) for x in a.steps.split(","))
    env = {**os.environ, **isa_env(a.isa)}
    for name in a.configs.split(","):
        c = CONFIGS[name]
        flat = ["--preset", c["preset"], "--batch", str(c["batch"]), "--ctx", str(c["ctx"]), "--threads", "1",
                "--warmup", "1"]
        sides = {"anychip": [a.anychip, "bench"] + flat, "pytorch": [a.python, TWIN, "bench"] + flat}
        per_step = {s: [] for s in sides}
        for i in range(a.repeats):
            for side in (list(sides) if i % 2 == 0 else list(sides)[::-1]):
                t1 = cpu_seconds(sides[side] + ["--steps", str(s1)], env)
                t2 = cpu_seconds(sides[side] + ["--steps", str(s2)], env)
                per_step[side].append((t2 - t1) / (s2 - s1))
                print(f"  {name} {side} {i + 1}/{a.repeats}: {per_step[side][-1] * 1e3:.0f} CPU-ms/step "
                      f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
        tokens = c["batch"] * c["ctx"]
        ours, twin = (statistics.median(per_step[s]) for s in sides)
        print(f"| {name} | {a.isa or 'best'} | {c['batch']} x {c['ctx']} | {tokens / ours:.0f} | {tokens / twin:.0f} "
              f"| {twin / ours:.2f}x | {', '.join(f'{x * 1e3:.0f}' for x in per_step['anychip'])} "
              f"| {', '.join(f'{x * 1e3:.0f}' for x in per_step['pytorch'])} |", flush=True)


if __name__ == "__main__":
    main()
