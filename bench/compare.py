#!/usr/bin/env python3
"""anychip next to its PyTorch twin on this machine: tokens/s, step time, MFU, peak RSS.

Both sides train the same architecture (same init scheme, batch, context, AdamW with clipping,
thread count) on random tokens, each in its own process so peak RSS is per side. Each side
runs --repeats times, alternating, so load from other work on the machine hits both; every
reported number is the median over repeats of each run's median step. MFU uses ONE fp32 FMA
peak for both columns: the median of the peaks anychip's cpu port measured in its runs.

--blas runs anychip once per ANYCHIP_BLAS setting given (e.g. `--blas builtin,mkl`: the gemm
crate and Intel MKL for f32 products), each as its own alternated side and table row against
the same PyTorch runs.

--isa caps both sides' instruction set, so the AVX2 or portable paths can be measured on a
machine that has more: anychip through ANYCHIP_CPU_ISA, PyTorch through ATEN_CPU_CAPABILITY and
its libraries' own caps (MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA; MKL too when anychip runs
on it). Each run reports the level it used. anychip's f32 products come from the gemm crate:
under --isa avx2 on a CPU with AVX-512 they run its AVX2+FMA kernels; under --isa portable they
keep gemm's own choice (crates/port-cpu/src/isa.rs says why), so a portable row measures
anychip's own kernels at portable, not a CPU without SIMD.

Normally started through bench/compare.sh, which builds the release binary first.
"""
import argparse, datetime, json, os, platform, re, shutil, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWIN = os.path.join(ROOT, "tools", "torch_twin", "gpt.py")

# Config names are a contract (scripts and the README refer to them).
CONFIGS = {
    "tiny": {"preset": "gpt2-tiny", "ctx": 128, "batch": 16},
    "small": {"preset": "gpt2-small-30m", "ctx": 256, "batch": 8},
    "gpt2-124m": {"preset": "gpt2-124m", "ctx": 256, "batch": 4},
    "llama-30m": {"preset": "llama-30m", "ctx": 256, "batch": 8},
}


def source():
    """The commit measured, and whether the working tree differed from it."""
    git = lambda *a: subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain", "-uno"))}


def machine(threads):
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "os": platform.platform(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "threads": threads}


# Per --isa level: (ANYCHIP_CPU_ISA, ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS, ONEDNN_MAX_CPU_ISA).
ISA_CAPS = {
    "avx512": ("avx512", "avx512", "AVX512", "AVX512_CORE"),
    "avx2": ("avx2", "avx2", "AVX2", "AVX2"),
    "portable": ("portable", "default", "SSE4_2", "SSE41"),
}


def isa_env(isa):
    """The environment variables that cap both sides at `isa` (empty: no cap)."""
    if not isa:
        return {}
    ours, aten, mkl, onednn = ISA_CAPS[isa]
    return {"ANYCHIP_CPU_ISA": ours, "ATEN_CPU_CAPABILITY": aten, "MKL_ENABLE_INSTRUCTIONS": mkl,
            "ONEDNN_MAX_CPU_ISA": onednn}


def run_json(cmd, label, env=None):
    """Run one benchmark process; its result is the JSON file it writes. None on failure."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        path = tmp.name
    load = os.getloadavg()[0]
    print(f"  {label} (load {load:.1f}) ...", file=sys.stderr, flush=True)
    p = subprocess.run(cmd + ["--json", path], capture_output=True, text=True, env=env)
    try:
        if p.returncode != 0:
            tail = (p.stderr.strip() or p.stdout.strip()).splitlines()[-3:]
            print(f"  {label} FAILED (exit {p.returncode}): {' | '.join(tail)}", file=sys.stderr)
            return None
        with open(path) as f:
            r = json.load(f)
        r["load_before"] = load
        r["load_after"] = os.getloadavg()[0]
        level = r.get("cpu_capability") or kernels(r.get("device"))
        print(f"  {label}: {r['tokens_per_s']:.0f} tok/s, step {r['step_ms_median']:.0f} ms"
              f"{f', {level}' if level else ''}", file=sys.stderr)
        return r
    finally:
        os.unlink(path)


def med(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def f32_gemm(device):
    """What multiplied f32 in an anychip run, from its device line ("gemm crate", "MKL 2026.2")."""
    m = re.search(r"f32 matmul: (.*?)(?: \(|, bf16 matmul|$)", device or "")
    return m.group(1) if m else None


def kernels(device):
    """The cpu port's dispatch level in an anychip run, from its device line ("kernels: avx2")."""
    m = re.search(r"kernels: (\w+)", device or "")
    return m.group(1) if m else None


def summarise(runs):
    if not runs:
        return None
    return {"tokens_per_s": med(runs, "tokens_per_s"), "step_ms": med(runs, "step_ms_median"),
            "f32_gemm": f32_gemm(runs[0].get("device")),
            "isa": runs[0].get("cpu_capability") or kernels(runs[0].get("device")),
            "peak_rss_mib": med(runs, "peak_rss_mib"), "n_params": runs[0].get("n_params"), "runs": runs}


def fmt(x, spec, suffix=""):
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def ratio(a, b):
    return a / b if a is not None and b else None


def paired(name, c, setting, ours_s, twin_s, warnings):
    """One table row: an anychip side (under ANYCHIP_BLAS=setting) against the PyTorch side."""
    row = {"config": name, **c, "blas": setting, "anychip": ours_s, "pytorch": twin_s}
    if ours_s and twin_s:
        if ours_s["n_params"] != twin_s["n_params"]:
            w = (f"PARAMETER COUNT MISMATCH on {name}: anychip {ours_s['n_params']:,} vs PyTorch "
                 f"{twin_s['n_params']:,}: the twin's preset differs from crates/model-config")
            warnings.append(w)
            print("!" * 8 + " " + w, file=sys.stderr)
        for k in ("batch", "ctx"):
            if ours_s["runs"][0][k] != twin_s["runs"][0][k]:
                warnings.append(f"{name}: {k} differs between the sides")
        # anychip's model FLOPs per token (the PaLM count) prices both sides' tokens.
        r0 = ours_s["runs"][0]
        row["flops_per_token"] = r0["model_gflops"] * 1e9 / r0["tokens_per_s"]
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anychip", required=True, help="path of the release anychip binary")
    ap.add_argument("--configs", default="tiny,small,gpt2-124m,llama-30m",
                    help=f"comma-separated, of: {', '.join(CONFIGS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run (>= 10 for the README)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--blas", help="comma-separated ANYCHIP_BLAS settings to run anychip under, each its own "
                    "side and row (e.g. builtin,mkl); default: the environment's")
    ap.add_argument("--isa", choices=list(ISA_CAPS), help="cap both sides at this instruction set (see above)")
    ap.add_argument("--python", default=os.environ.get("ANYCHIP_TWIN_PYTHON", sys.executable),
                    help="the Python with torch to run the twin on (default $ANYCHIP_TWIN_PYTHON or this one)")
    ap.add_argument("--out", help="JSON result (default bench/out/compare-<date>.json)")
    a = ap.parse_args()

    names = [c for c in a.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        sys.exit(f"error: unknown config {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    if a.steps < 10:
        print(f"warning: --steps {a.steps} < 10: medians this short are not README material", file=sys.stderr)

    # Run a private copy: a concurrent `cargo build` may replace the binary between runs.
    snap = os.path.join(tempfile.mkdtemp(prefix="anychip-compare-"), "anychip")
    shutil.copy2(a.anychip, snap)
    a.anychip = snap

    help_text = subprocess.run([a.anychip, "bench", "--help"], capture_output=True, text=True).stdout
    run_anychip = a.precision == "f32" or "--precision" in help_text
    if not run_anychip:
        print(f"NOTE: `anychip bench` has no --precision flag yet, so --precision {a.precision} runs the "
              "PyTorch side only (anychip and MFU columns are n/a).", file=sys.stderr)

    # One anychip side per ANYCHIP_BLAS setting (None: the environment's own).
    settings = [b.strip() for b in a.blas.split(",") if b.strip()] if a.blas else [None]
    ours_sides = ["anychip"] if settings == [None] else [f"anychip[{b}]" for b in settings]
    setting_of = dict(zip(ours_sides, settings))
    results, peaks, warnings = [], [], []
    for name in names:
        c = CONFIGS[name]
        flat = ["--preset", c["preset"], "--batch", str(c["batch"]), "--ctx", str(c["ctx"]), "--threads",
                str(a.threads), "--steps", str(a.steps), "--warmup", str(a.warmup)]
        ours = [a.anychip, "bench"] + flat + (["--precision", a.precision] if a.precision != "f32" else [])
        twin = [a.python, TWIN, "bench"] + flat + ["--precision", a.precision]
        print(f"{name} ({c['preset']}, batch {c['batch']}, ctx {c['ctx']}):", file=sys.stderr)
        sides = {s: [] for s in ours_sides + ["pytorch"]}
        for i in range(a.repeats):
            # Rotate who goes first so a slow spell on the machine does not favour one side.
            order = list(sides)[i % len(sides):] + list(sides)[:i % len(sides)]
            for side in order:
                if side != "pytorch" and not run_anychip:
                    continue
                setting = setting_of.get(side)
                env = {**os.environ, **isa_env(a.isa)}
                if setting is not None:
                    env["ANYCHIP_BLAS"] = setting
                r = run_json(twin if side == "pytorch" else ours, f"{side} {i + 1}/{a.repeats}", env)
                if r is not None:
                    sides[side].append(r)
        twin_s = summarise(sides["pytorch"])
        for side, setting in setting_of.items():
            peaks += [r["peak_gflops"] for r in sides[side] if r.get("peak_gflops")]
            results.append(paired(name, c, setting, summarise(sides[side]), twin_s, warnings))

    peak = statistics.median(peaks) if peaks else None
    for row in results:
        for side in ("anychip", "pytorch"):
            s = row[side]
            if s and peak and row.get("flops_per_token"):
                s["mfu"] = row["flops_per_token"] * s["tokens_per_s"] / (peak * 1e9)
        o, t = row["anychip"] or {}, row["pytorch"] or {}
        row["ratio"] = {"tokens_per_s": ratio(o.get("tokens_per_s"), t.get("tokens_per_s")),
                        "peak_rss": ratio(o.get("peak_rss_mib"), t.get("peak_rss_mib"))}

    m = machine(a.threads)
    m.update(source())
    shutil.rmtree(os.path.dirname(snap), ignore_errors=True)
    loads = [r.get(k) for row in results for s in ("anychip", "pytorch") if row[s]
             for r in row[s]["runs"] for k in ("load_before", "load_after")]
    max_load = max((l for l in loads if l is not None), default=None)
    table = markdown(results, m, peak, a, max_load, warnings)
    print(table)
    out = a.out or os.path.join(ROOT, "bench", "out", f"compare-{datetime.date.today()}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"machine": m, "isa": a.isa, "isa_env": isa_env(a.isa), "precision": a.precision, "steps": a.steps, "warmup": a.warmup,
                   "repeats": a.repeats, "peak_gflops": peak, "max_load": max_load, "warnings": warnings,
                   "configs": results, "table_md": table}, f, indent=2)
    print(f"wrote {out}", file=sys.stderr)
    failed = [r["config"] for r in results if r["pytorch"] is None or (run_anychip and r["anychip"] is None)]
    if failed or warnings:
        sys.exit(f"error: {'failed runs: ' + ', '.join(failed) + '; ' if failed else ''}{'; '.join(warnings)}")


def markdown(results, m, peak, a, max_load, warnings):
    load = "" if max_load is None else f", load average up to {max_load:.1f}"
    if max_load is not None and max_load > m["cores"]:
        load += " (busy machine: more runnable work than cores, numbers are pessimistic)"
    caps = f"capped at {a.isa} on both sides ({', '.join(f'{k}={v}' for k, v in isa_env(a.isa).items())}), " \
        if a.isa else ""
    lines = [
        f"{m['cpu']}, {m['cores']} cores, {a.threads} threads, {a.precision}, {caps}{m['date'][:10]}, "
        f"anychip {m['commit']}{' (+ uncommitted changes)' if m['dirty'] else ''}; "
        f"median of {a.repeats} runs x {a.steps} steps after {a.warmup} warm-up; "
        f"MFU against the measured FMA peak of {fmt(peak, '.0f')} GFLOP/s{load}.",
        "",
        "| config | anychip f32 GEMM | ISA anychip / PyTorch | params | batch x ctx | anychip tok/s | PyTorch tok/s | tok/s ratio | anychip step ms "
        "| PyTorch step ms | anychip MFU | PyTorch MFU | anychip RSS MiB | PyTorch RSS MiB | RSS ratio |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        o, t = r["anychip"] or {}, r["pytorch"] or {}
        params = o.get("n_params") or t.get("n_params")
        pct = lambda x: fmt(None if x is None else 100 * x, ".1f", "%")
        lines.append(
            f"| {r['config']} | {o.get('f32_gemm') or 'n/a'} | {o.get('isa') or 'n/a'} / {t.get('isa') or 'n/a'} | {fmt(params and params / 1e6, '.1f', 'M')} | {r['batch']} x {r['ctx']} "
            f"| {fmt(o.get('tokens_per_s'), '.0f')} | {fmt(t.get('tokens_per_s'), '.0f')} "
            f"| {fmt(r['ratio']['tokens_per_s'], '.2f', 'x')} | {fmt(o.get('step_ms'), '.0f')} "
            f"| {fmt(t.get('step_ms'), '.0f')} | {pct(o.get('mfu'))} | {pct(t.get('mfu'))} "
            f"| {fmt(o.get('peak_rss_mib'), '.0f')} | {fmt(t.get('peak_rss_mib'), '.0f')} "
            f"| {fmt(r['ratio']['peak_rss'], '.2f', 'x')} |")
    base = [r["baseline_rss_mib"] for x in results if x["pytorch"]
            for r in x["pytorch"]["runs"] if "baseline_rss_mib" in r]
    if base:
        lines.append(f"\nPyTorch RSS includes about {statistics.median(base):.0f} MiB taken by `import torch` alone.")
    lines += [f"\n**Warning:** {w}" for w in warnings]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
