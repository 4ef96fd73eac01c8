"""The planner: chips, plan, compare, fleet as plain objects and DataFrames."""

from pathlib import Path

import pytest

import anychip

EXAMPLES = Path(__file__).parents[2] / "examples" / "fleet"


def test_chips_lists_the_database():
    chips = anychip.chips()
    names = {c["name"] for c in chips}
    assert {"h20", "p800", "ppu"} <= names
    h20 = next(c for c in chips if c["name"] == "h20")
    assert h20["bf16_tflops"] > 0 and h20["export_class"]
    frame = chips.to_pandas()
    assert len(frame) == len(chips) and "memory_gb" in frame.columns
    over = anychip.chips(overrides=["h20.bf16_tflops=1"])
    assert next(c for c in over if c["name"] == "h20")["bf16_tflops"] == 1


def test_plan_ranks_layouts_fastest_first():
    p = anychip.plan(model="qwen3-8b", chips="h20:256", tokens=1e12, top=3)
    assert p["chip"] == "h20" and p["count"] == 256 and 1 <= len(p["rows"]) <= 3
    speeds = [r["tokens_per_s"] for r in p["rows"]]
    assert speeds == sorted(speeds, reverse=True) and p["best"] == p["rows"][0]
    assert 0 < p["best"]["mfu"] < 1 and p["best"]["days"] > 0
    # h20 is an NVIDIA part: its error bar is the NVIDIA dense runs' cross-validated error, then
    # the error on the NVIDIA dense runs of the held-out file (no fit saw them).
    kinds = [(a["kind"], a["family"], a["held_out"]) for a in p["accuracy"]]
    assert kinds == [("dense", "nvidia", "source"), ("dense", "nvidia", "blind")]
    assert 0 < p["accuracy"][0]["mean_abs_error"] < 0.2


def test_plan_takes_the_stack_precision_and_a_pinned_layout():
    p = anychip.plan(
        model="qwen3-30b-a3b",
        chips="h100:16",
        tokens=1e12,
        stack="nemo-2025",
        precision="fp8",
        layout="tp=2,ep=4,etp=2,mb=1",
    )
    assert p["stack"] == "nemo-2025" and p["precision"] == "fp8"
    assert len(p["ranked"]) == 1 and p["ranked"][0]["estimate"]["layout"]["etp"] == 2
    assert "etp2" in p["best"]["layout"]
    with pytest.raises(anychip.InputError, match="unknown key 'colour'"):
        anychip.plan(model="qwen3-30b-a3b", chips="h100:16", tokens=1e12, layout="tp=2,colour=blue")
    # A layout that parses but cannot split this model's experts is refused by name.
    with pytest.raises(anychip.AnychipError, match="etp=5"):
        anychip.plan(model="qwen3-30b-a3b", chips="h100:16", tokens=1e12, layout="tp=2,ep=4,etp=5")


def test_a_pinned_layout_over_memory_raises_with_its_plan():
    # As `anychip plan --layout` prints the plan before its error line, the exception carries it.
    with pytest.raises(anychip.AnychipError, match="does not fit") as e:
        anychip.plan(model="llama3-405b", chips="h100:8", tokens=1e12, layout="tp=8,zero=0")
    p = e.value.plan
    assert p["over_memory"].startswith("needs ") and p["rows"][0]["step_s"] > 0
    assert p["rows"][0]["memory_gib"] > p["ranked"][0]["estimate"]["capacity"] / 2**30
    # Any other refusal carries no plan.
    with pytest.raises(anychip.AnychipError) as e:
        anychip.plan(model="qwen3-30b-a3b", chips="h100:16", tokens=1e12, layout="tp=2,ep=4,etp=5")
    assert not hasattr(e.value, "plan")


def test_a_config_of_an_unknown_family_plans_and_says_what_was_assumed(tmp_path):
    # Qwen3-30B-A3B's published config under a model_type the planner does not know.
    fixture = Path(__file__).parents[2] / "crates/plan/tests/hf_configs/Qwen3-30B-A3B/config.json"
    (tmp_path / "config.json").write_text(fixture.read_text().replace('"qwen3_moe"', '"new_family"'))
    p = anychip.plan(model=str(tmp_path), chips="h100:16", tokens=1e12)
    assert "model_type 'new_family'" in p["model_note"] and "Qwen-MoE" in p["model_note"]
    same = anychip.plan(model="qwen3-30b-a3b", chips="h100:16", tokens=1e12)
    assert same["model_note"] is None and p["best"]["tokens_per_s"] == same["best"]["tokens_per_s"]


def test_compare_matches_each_chips_plan():
    rows = anychip.compare(["h20", "p800", "ppu"], model="qwen3-8b", count=256, tokens=1e12)
    assert [r["chip"] for r in rows] == ["h20", "p800", "ppu"]
    for r in rows:
        if r["refused"] is None:
            best = anychip.plan(model="qwen3-8b", chips=f"{r['chip']}:256", tokens=1e12)["best"]
            assert r["tokens_per_s"] == best["tokens_per_s"] and r["layout"] == best["layout"]
            assert r["accuracy"].startswith("accuracy: "), r
    assert any(r["refused"] is None for r in rows)


def test_compare_under_a_deadline_gives_each_kind_its_fewest_chips():
    rows = anychip.compare(["h100", "h20", "p800"], model="llama3-8b", days=20, tokens=1e12, stack="nemo-2025")
    by = {r["chip"]: r for r in rows}
    assert by["p800"]["refused"] and "mem_bw_tbs" in by["p800"]["refused"]
    for chip in ("h100", "h20"):
        r = by[chip]
        assert r["refused"] is None and r["days"] <= 20 and r["count"] % 8 == 0, r
        best = anychip.plan(model="llama3-8b", chips=f"{chip}:{r['count']}", tokens=1e12, stack="nemo-2025")["best"]
        assert best["tokens_per_s"] == r["tokens_per_s"]
    assert by["h100"]["count"] < by["h20"]["count"]
    with pytest.raises(anychip.InputError):
        anychip.compare(["h100"], model="llama3-8b", count=8, days=20)
    with pytest.raises(anychip.InputError):
        anychip.compare(["h100"], model="llama3-8b")


def test_fleet_from_files_and_from_dicts_agree():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    s = anychip.fleet(EXAMPLES / "fleet.toml", EXAMPLES / "jobs.toml")
    assert s["assignments"] and s["makespan_days"] > 0
    assert {r["job"] for r in s["rows"]} == {a["job"] for a in s["assignments"]}
    fleet = tomllib.loads((EXAMPLES / "fleet.toml").read_text())
    jobs = tomllib.loads((EXAMPLES / "jobs.toml").read_text())
    assert anychip.fleet(fleet, jobs) == s


def test_fleet_deadlines_from_dicts():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    fleet = tomllib.loads((EXAMPLES / "fleet.toml").read_text())
    jobs = tomllib.loads((EXAMPLES / "jobs.toml").read_text())
    for j in jobs["job"]:
        if j["name"] == "frontier-70b":
            j["deadline_days"] = 40
    s = anychip.fleet(fleet, jobs)
    a = next(a for a in s["assignments"] if a["job"] == "frontier-70b")
    assert a["meets_deadline"] is False and a["chips_for_deadline"][0][1] > 512, a
    assert all(a["meets_deadline"] is None for a in s["assignments"] if a["job"] != "frontier-70b")


def test_check_prices_your_own_runs():
    runs = Path(__file__).parents[2] / "examples" / "runs" / "runs.toml"
    r = anychip.check(runs)
    assert r["summary"]["rows"] == 2 == len(r["rows"])
    for row in r["rows"]:
        err = row["predicted_tokens_per_chip_s"] / row["published_tokens_per_chip_s"] - 1
        assert abs(err - row["error"]) < 1e-9 and not row["fitted"]
    mean = sum(abs(row["error"]) for row in r["rows"]) / 2
    assert abs(mean - r["summary"]["mean_abs_error"]) < 1e-12
    assert "error" in r["rows"].to_pandas().columns


def test_check_refuses_a_missing_or_bad_runs_file(tmp_path):
    with pytest.raises(anychip.DataError, match="does not exist"):
        anychip.check(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('[[row]]\nid = "a"\nchip = "h100"\n')
    with pytest.raises(anychip.AnychipError, match="missing field"):
        anychip.check(bad)


def test_measured_runs_set_the_chips_residual(tmp_path):
    # The example's MI355X run, measured 20% slower than the model says: the plan with
    # measured= carries the residual its rule gives (one run: exp(ln 1.2 / 11), 1.02).
    runs = Path(__file__).parents[2] / "examples" / "runs" / "runs.toml"
    checked = anychip.check(runs)
    mixtral = next(r for r in checked["rows"] if r["chip"] == "mi355x")
    text = runs.read_text()
    slow = mixtral["predicted_tokens_per_chip_s"] / 1.2
    mine = tmp_path / "mine.toml"
    mine.write_text(text.replace("tokens_per_gpu_s = 3475", f"tokens_per_gpu_s = {slow}"))
    job = dict(model="qwen3-8b", chips="mi355x:64", tokens=1e12, stack="rocm-megatron-2025", top=1)
    shipped, measured = anychip.plan(**job), anychip.plan(**job, measured=mine)
    assert measured["chip_residual"]["factor"] == 1.02 and measured["chip_residual"]["measured"] == str(mine)
    ratio = shipped["best"]["tokens_per_s"] / measured["best"]["tokens_per_s"]
    assert abs(ratio - 1.02 / shipped["chip_residual"]["factor"]) < 1e-9
    with pytest.raises(anychip.DataError, match="does not exist"):
        anychip.plan(**job, measured=tmp_path / "none.toml")
    # The fleet prices its MI355X pool with the same residual.
    fleet = {"pool": [{"name": "amd", "chip": "mi355x", "count": 64}]}
    jobs = {"job": [{"name": "q", "model": "qwen3-8b", "tokens": 1e12, "stack": "rocm-megatron-2025"}]}
    days = [anychip.fleet(fleet, jobs, measured=m)["rows"][0]["days"] for m in (None, mine)]
    assert abs(days[1] / days[0] - 1.02 / shipped["chip_residual"]["factor"]) < 1e-9
