"""`instantsoup study` (a grid of cells appended to a JSONL file, resumable) and `report` on its results,
the statistics behind the report, and the run-directory report's seed grouping and plots."""
import json
import math

import numpy as np
import pytest

from instantsoup import stats
from instantsoup import study as S
from instantsoup.cli import main
from instantsoup.config import SettingsError
from test_cli import write_table

pytestmark = pytest.mark.usefixtures("one_thread")


def write_study(tmp_path, model_dir, methods=None, seeds=(0, 1), sparsities=(0.5,)):
    table = tmp_path / "toy.csv"
    if not table.exists():
        write_table(table, n=120)
    study = {
        "name": "toy", "seeds": list(seeds), "sparsities": list(sparsities), "threads": 1,
        "results": str(tmp_path / "results" / "toy.jsonl"), "runs": str(tmp_path / "runs"),
        "settings": {"train": {"batch_size": 16, "lr": 1e-3, "epochs": 2, "max_length": 16},
                     "data": {"task": str(table)}, "run": {"model": str(model_dir)}},
        "methods": methods or [
            {"label": "dense", "method": "dense"},
            {"label": "imp", "method": "imp", "prune": {"step": 0.3}},
            {"label": "omp", "method": "omp", "max_steps": {"0.5": 9}},
        ],
    }
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(study))
    return path


def test_study_mask_overlaps_against_numpy(tmp_path, capsys):
    """Jaccard of the kept weights per seed from the cells' mask files; a ticket of another level and a
    missing run directory are left out; the CLI appends one table per sparsity."""
    from instantsoup import report
    from instantsoup.masks import MaskSet

    rng = np.random.default_rng(0)
    shapes = {"a.weight": (30, 20), "b.weight": (50,)}
    P = 650
    kept = {}

    def cell(label, sp, seed, kept_flat, mask_sparsity=None):
        run = f"runs/{label}-{seed}-{sp}"
        (tmp_path / run / "ticket").mkdir(parents=True)
        flat = kept_flat.astype(np.uint8)
        MaskSet({"a.weight": flat[:600].reshape(30, 20), "b.weight": flat[600:]}).save(
            tmp_path / run / "ticket" / "masks.safetensors")
        return {"label": label, "target_sparsity": sp, "seed": seed, "run_dir": run,
                "sparsity": 1 - flat.mean() if mask_sparsity is None else mask_sparsity}

    recs = []
    for seed in (0, 1):
        for label in ("x", "y"):
            k = rng.random(P) < 0.5
            kept[(label, seed)] = k
            recs.append(cell(label, 0.5, seed, k))
    k = rng.random(P) < 0.5
    recs.append(cell("z", 0.5, 0, k, mask_sparsity=0.7))  # its ticket holds another level: left out
    recs.append({"label": "w", "target_sparsity": 0.5, "seed": 0, "run_dir": "runs/gone", "sparsity": 0.5})
    pairs = report.study_overlaps(recs, tmp_path)
    assert [(p["label_a"], p["label_b"], p["seeds"]) for p in pairs] == [("x", "y", [0, 1])]
    for seed, j in zip((0, 1), pairs[0]["jaccard"]):
        a, b = kept[("x", seed)], kept[("y", seed)]
        assert j == pytest.approx((a & b).sum() / (a | b).sum(), abs=1e-12)
    md = report.study_overlaps_markdown(pairs)
    assert f"| x | {np.mean(pairs[0]['jaccard']):.3f} (2) |" in md and "target sparsity 0.500" in md
    assert "No two cells" in report.study_overlaps_markdown([])
    results = tmp_path / "r.jsonl"
    for r, f in zip(recs[:4], fake_records(seeds=(0, 1))[:4]):
        S.append_record(results, dict(f, **{k: v for k, v in r.items() if k != "sparsity"}, sparsity=r["sparsity"]))
    assert main(["report", str(results), "--overlaps", "--runs-root", str(tmp_path), "--bootstrap", "100"]) == 0
    assert "Mask overlap at target sparsity 0.500" in capsys.readouterr().out


def test_study_runs_every_cell_once_and_records_what_the_report_needs(tiny_bert_dir, tmp_path, capsys):
    path = write_study(tmp_path, tiny_bert_dir)
    results = tmp_path / "results" / "toy.jsonl"
    assert main(["study", str(path), "--only", "dense"]) == 0
    assert [r["cell"] for r in S.read_records(results)] == ["dense/0/0", "dense/0/1"]
    assert main(["study", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ran 4, already done 2, failed 0" in out
    recs = S.read_records(results)
    assert sorted(r["cell"] for r in recs) == sorted(
        ["dense/0/0", "dense/0/1", "imp/0.5/0", "imp/0.5/1", "omp/0.5/0", "omp/0.5/1"])
    for r in recs:
        for k in ("method", "variant", "target_sparsity", "sparsity", "seed", "test_accuracy", "val_accuracy",
                  "steps", "flops", "run_wall_seconds", "instantsoup_version", "git_commit", "threads",
                  "precision", "settings"):
            assert k in r, k
        assert r["threads"] == 1 and r["precision"] == "float32"
        # the per-example correctness reproduces the accuracies (and the run's own numbers)
        for pre in ("test", "val"):
            bits = S.unpack_bits(r[f"{pre}_correct"], r[f"{pre}_n"])
            assert bits.mean() == pytest.approx(r[f"{pre}_accuracy"], abs=1e-12)
            assert f"{pre}_accuracy_run" not in r
        assert r["settings"]["train"]["seed"] == r["seed"]
    omp = [r for r in recs if r["label"] == "omp"]
    assert all(r["steps"] == 9 and r["settings"]["train"]["max_steps"] == 9 for r in omp)  # the budget rule
    assert all(abs(r["sparsity"] - 0.5) < 1e-3 for r in omp)
    imp = [r for r in recs if r["label"] == "imp"]
    assert all(r["steps"] > omp[0]["steps"] for r in imp)
    for r in imp:  # one record per round's ticket; the last is the cell's own
        assert [round(lv["sparsity"], 3) for lv in r["imp_levels"]] == [0.0, 0.3, 0.5]
        assert r["imp_levels"][-1]["test_accuracy"] == pytest.approx(r["test_accuracy"], abs=1e-12)
        assert r["imp_levels"][-1]["steps"] == r["steps"]
    # a second invocation does nothing: every cell has its line
    assert main(["study", str(path)]) == 0
    assert "ran 0, already done 6, failed 0" in capsys.readouterr().out
    assert len(results.read_text().splitlines()) == 6
    assert main(["study", str(path), "--list"]) == 0
    assert capsys.readouterr().out.count("done  ") == 6
    # the round checkpoints of finished cells are gone; what the report reads stays
    imp_dir = tmp_path / "runs" / imp[0]["run_dir"].split("/")[-1]
    assert sorted(p.name for p in imp_dir.iterdir()) == ["history.jsonl", "settings.json", "ticket"]


def test_a_cell_without_a_line_is_redone_and_a_partial_line_is_ignored(tiny_bert_dir, tmp_path, capsys):
    path = write_study(tmp_path, tiny_bert_dir, methods=[{"label": "dense", "method": "dense"}])
    results = tmp_path / "results" / "toy.jsonl"
    assert main(["study", str(path), "--seeds", "0"]) == 0
    first = results.read_text()
    # a process killed while writing seed 1's line left half of it behind
    results.write_text(first + first.splitlines()[0][:40].replace("dense/0/0", "dense/0/1"))
    assert [r["cell"] for r in S.read_records(results)] == ["dense/0/0"]
    assert main(["study", str(path)]) == 0
    lines = results.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["cell"] == "dense/0/1"  # on a line of its own
    assert [r["cell"] for r in S.read_records(results)] == ["dense/0/0", "dense/0/1"]
    # the same run directory: a cell redone after its line was lost trains nothing new
    seed0 = S.read_records(results)[0]
    results.write_text(lines[2] + "\n")
    assert main(["study", str(path)]) == 0
    again = {r["cell"]: r for r in S.read_records(results)}["dense/0/0"]
    assert again["test_correct"] == seed0["test_correct"] and again["run_dir"] == seed0["run_dir"]


def test_append_record_is_one_line_per_call(tmp_path):
    p = tmp_path / "r.jsonl"
    for i in range(3):
        S.append_record(p, {"cell": f"a/0/{i}", "x": [1, 2]})
    assert [json.loads(x)["cell"] for x in p.read_text().splitlines()] == ["a/0/0", "a/0/1", "a/0/2"]
    with pytest.raises(ValueError):
        S.append_record(p, {"cell": "nan/0/0", "x": float("nan")})  # never a line JSON readers refuse
    assert len(p.read_text().splitlines()) == 3


def test_pack_bits_round_trip(rng):
    for n in (1, 7, 8, 9, 2065):
        x = rng.random(n) < 0.7
        assert np.array_equal(S.unpack_bits(S.pack_bits(x), n), x)


@pytest.mark.parametrize("change, msg", [
    ({"methods": [{"label": "x", "method": "nope"}]}, "method must be one of"),
    ({"methods": [{"label": "a", "method": "dense"}, {"label": "a", "method": "omp"}]}, "used twice"),
    ({"methods": [{"label": "o", "method": "omp", "max_steps": {"0.3": 5}}]}, "no entry for sparsities"),
    ({"methods": [{"label": "o", "method": "omp", "prune": {"spicy": 1}}]}, "unknown prune settings: spicy"),
    ({"methods": [{"label": "i", "method": "imp", "prune": {"step": 2.0}}]}, "i/0.5/0: step must be in (0, 1)"),
    ({"methods": [{"label": "i", "method": "imp"}], "sparsities": [1.5]}, "sparsity must be in [0, 1)"),
    ({"seeds": ["0"]}, "seeds: expected a list of integers"),
    ({"colour": "blue"}, "unknown study keys: colour"),
    ({"methods": []}, "lists no methods"),
])
def test_bad_study_files_are_one_error_line_before_any_work(change, msg, tiny_bert_dir, tmp_path, capsys):
    path = write_study(tmp_path, tiny_bert_dir)
    d = json.loads(path.read_text())
    d.update(change)
    path.write_text(json.dumps(d))
    rc = main(["study", str(path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("instantsoup study: error:") and msg in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_study_file_errors(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("x: 1\n")
    (tmp_path / "s.toml").write_text("name = \n")
    for name, msg in (("missing.toml", "does not exist"), ("s.yaml", ".toml or .json"), ("s.toml", "not valid TOML")):
        assert main(["study", str(tmp_path / name)]) == 2
        assert msg in capsys.readouterr().err


def test_toml_study_file(tiny_bert_dir, tmp_path):
    path = write_study(tmp_path, tiny_bert_dir)
    d = json.loads(path.read_text())
    toml = (f'name = "toy"\nseeds = [0, 1]\nsparsities = [0.5]\nruns = "{tmp_path / "runs"}"\n'
            f'[settings]\ntrain = {{batch_size = 16, lr = 1e-3}}\ndata = {{task = "{d["settings"]["data"]["task"]}"}}\n'
            f'run = {{model = "{tiny_bert_dir}"}}\n'
            '[[methods]]\nlabel = "dense"\nmethod = "dense"\n'
            '[[methods]]\nlabel = "gmp"\nmethod = "gmp"\nprune = {step = 0.2}\nmatch_steps = {"0.5" = 30}\n')
    (tmp_path / "t.toml").write_text(toml)
    st = S.load_study(tmp_path / "t.toml")
    assert st.results.as_posix() == "results/toy.jsonl"
    assert [c.key for c in st.cells()] == ["dense/0/0", "gmp/0.5/0", "dense/0/1", "gmp/0.5/1"]  # seed-major
    gmp = st.cells()[1].settings
    assert (gmp.prune.method, gmp.prune.step, gmp.train.match_steps, gmp.train.seed) == ("gmp", 0.2, 30, 0)
    assert gmp.run.threads == 0 and gmp.train.lr == 1e-3


# ---- statistics -------------------------------------------------------------------------------
def test_t_interval_matches_scipy():
    sp = pytest.importorskip("scipy.stats")
    for n in (2, 3, 5, 12, 31):
        x = np.random.default_rng(n).normal(size=n)
        m, h = stats.mean_ci(x)
        lo, hi = sp.t.interval(0.95, n - 1, loc=x.mean(), scale=sp.sem(x))
        assert m == pytest.approx(x.mean()) and h == pytest.approx((hi - lo) / 2, rel=2e-3 if n < 31 else 3e-2)
    assert math.isnan(stats.mean_ci([1.0])[1])


def test_paired_bootstrap_against_hand_computed_cases():
    # a constant difference has a degenerate interval at that value
    est, lo, hi = stats.paired_bootstrap([np.full(50, 2.0), np.full(50, 2.0)], n_boot=200)
    assert (est, lo, hi) == (2.0, 2.0, 2.0)
    # one seed: the interval is the ordinary example bootstrap of a mean, ~ mean ± 1.96·sd/sqrt(n)
    rng = np.random.default_rng(0)
    d = rng.choice([-1.0, 0.0, 1.0], size=2000, p=[0.2, 0.5, 0.3])
    est, lo, hi = stats.paired_bootstrap([d], n_boot=4000)
    se = d.std() / np.sqrt(len(d))
    assert est == pytest.approx(d.mean())
    assert lo == pytest.approx(d.mean() - 1.96 * se, abs=0.25 * se)
    assert hi == pytest.approx(d.mean() + 1.96 * se, abs=0.25 * se)
    # seeds that disagree widen the interval beyond the within-seed noise
    wide = stats.paired_bootstrap([np.full(500, -3.0), np.full(500, 3.0), np.full(500, 0.0)], n_boot=2000)
    assert wide[1] <= -2.0 and wide[2] >= 2.0
    with pytest.raises(ValueError):
        stats.paired_bootstrap([np.zeros(3), np.zeros(4)])


@pytest.mark.parametrize("lo, hi, expect", [(-0.5, 0.9, "equivalent"), (1.2, 2.0, "better"), (-3.0, -1.1, "worse"),
                                            (-0.5, 1.5, "non-inferior"), (-1.5, 0.5, "inconclusive"),
                                            (-2.0, 2.0, "inconclusive"), (float("nan"), 1.0, "n/a")])
def test_verdict(lo, hi, expect):
    assert stats.verdict(lo, hi, 1.0) == expect


# ---- the report of a results file --------------------------------------------------------------
def fake_records(n_test=400, seeds=(0, 1, 2)):
    """Records of a study whose per-example correctness is known: 'same' = imp's, 'worse' = 5 points lower."""
    recs = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        base = rng.random(n_test) < 0.8
        worse = base.copy()
        worse[np.flatnonzero(base)[:20]] = False  # 20/400 = 5 points
        for label, method, sp, c, steps in (("dense", "dense", 0.0, base, 100), ("imp", "imp", 0.5, base, 400),
                                            ("same", "isp", 0.5, base, 150), ("worse", "omp", 0.5, worse, 150)):
            recs.append({"cell": S.cell_key(label, sp, seed), "label": label, "method": method,
                         "target_sparsity": sp, "sparsity": sp, "seed": seed, "test_accuracy": float(c.mean()),
                         "val_accuracy": 0.8, "test_correct": S.pack_bits(c), "test_n": n_test,
                         "test_majority": 0.55, "steps": steps, "flops": 1e12, "run_wall_seconds": 60.0})
    return recs


def test_study_report_tables_verdicts_and_plots(tmp_path, capsys):
    results = tmp_path / "r.jsonl"
    for r in fake_records():
        S.append_record(results, r)
    pairs = {p["label"]: p for p in __import__("instantsoup.report", fromlist=["x"]).study_pairs(
        S.read_records(results), n_boot=500)}
    assert pairs["same"]["diff"] == 0 and pairs["same"]["verdict"] == "equivalent"
    assert pairs["worse"]["diff"] == pytest.approx(-5.0) and pairs["worse"]["verdict"] == "worse"
    assert pairs["same"]["step_ratio"] == pytest.approx(150 / 400)
    assert not pairs["same"]["provisional"]
    one = [r for r in S.read_records(results) if r["seed"] == 0]
    md1 = __import__("instantsoup.report", fromlist=["x"]).study_markdown(one, n_boot=200)
    assert "| worse | 0.500 | 0 | -5.00 |" in md1 and "| worse (provisional: 1 of 3 seeds) |" in md1
    rc = main(["report", str(results), "--plots", str(tmp_path / "plots"), "--markdown", str(tmp_path / "t.md"),
               "--bootstrap", "500"])
    assert rc == 0
    out = capsys.readouterr().out
    md = (tmp_path / "t.md").read_text()
    assert md in out
    row = [line for line in md.splitlines() if line.startswith("| worse | 0.500 | 0,1,2 | -5.00 | [")]
    assert len(row) == 1 and row[0].endswith("| 0.00 | 0.38 | worse |")
    assert "majority class scores 55.0 %" in md
    assert "| dense | 0.000 |" in md
    for name in ("study_accuracy_vs_sparsity", "study_cost"):
        p = tmp_path / "plots" / f"{name}.png"
        assert p.exists() and p.stat().st_size > 5000
    assert main(["report", str(results), "--reference", "nobody", "--bootstrap", "100"]) == 0
    assert "no cell shares a sparsity" in capsys.readouterr().out
    assert main(["report", str(results), str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["report", str(tmp_path / "empty.jsonl")]) == 2  # one error line, exit 2


def test_report_group_by_seed_on_run_directories(tiny_bert_dir, tmp_path, capsys):
    path = write_study(tmp_path, tiny_bert_dir, seeds=(0, 1, 2), methods=[
        {"label": "dense", "method": "dense"}, {"label": "omp", "method": "omp", "sparsities": [0.3, 0.6]},
        {"label": "random", "method": "random", "sparsities": [0.6]}])
    assert main(["study", str(path)]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs"), "--group-by", "seed", "--plots", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines() if line.startswith(("dense", "omp", "random"))]
    assert sorted((t[0], t[2], t[3]) for t in table) == [("dense", "3", "0,1,2"), ("omp", "3", "0,1,2"),
                                                         ("omp", "3", "0,1,2"), ("random", "3", "0,1,2")]
    assert "test_accuracy_ci" in out
    for name in ("accuracy_vs_sparsity", "mask_overlap", "cost"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 5000
    recs = S.read_records(tmp_path / "results" / "toy.jsonl")
    from instantsoup import report

    rows = report.group_by_seed(report.load_rows(report.find_tickets([tmp_path / "runs"])))
    dense = [r for r in rows if r["method"] == "dense"][0]
    accs = [r["test_accuracy"] for r in recs if r["label"] == "dense"]
    assert dense["test_accuracy"] == pytest.approx(np.mean(accs))
    assert dense["test_accuracy_ci"] == pytest.approx(stats.mean_ci(accs)[1])
    assert report.test_majority(rows) == pytest.approx(recs[0]["test_majority"])


def test_one_imp_run_gives_the_cells_of_its_lower_levels(tiny_bert_dir, tmp_path, capsys):
    path = write_study(tmp_path, tiny_bert_dir, seeds=(0,), methods=[
        {"label": "imp", "method": "imp", "prune": {"step": 0.3}, "sparsities": [0.3, 0.51]},
        {"label": "imp-alone", "method": "imp", "prune": {"step": 0.3}, "sparsities": [0.3]}])
    assert main(["study", str(path), "--only", "imp"]) == 0
    assert "ran 2, already done 0" in capsys.readouterr().out  # two cells from one run
    recs = {r["cell"]: r for r in S.read_records(tmp_path / "results" / "toy.jsonl")}
    low, high = recs["imp/0.3/0"], recs["imp/0.51/0"]
    assert low["derived_from"] == "imp/0.51/0" and low["run_dir"] == high["run_dir"]
    assert abs(low["sparsity"] - 0.3) < 1e-3 and abs(high["sparsity"] - 0.51) < 1e-3
    assert low["steps"] * 3 == high["steps"] * 2  # two of the three budgets
    assert "imp_levels_full" not in high and "imp_levels" not in low
    # the round's ticket is the ticket a separate IMP run to that level draws
    assert main(["study", str(path)]) == 0
    alone = S.read_records(tmp_path / "results" / "toy.jsonl")[-1]
    assert alone["cell"] == "imp-alone/0.3/0"
    for k in ("test_correct", "val_correct", "test_accuracy", "val_accuracy", "sparsity", "steps"):
        assert alone[k] == low[k], k


def test_report_rows_list_each_label_by_ascending_sparsity():
    from instantsoup import report

    def rec(label, sp, seed):
        return {"label": label, "target_sparsity": sp, "seed": seed}

    # an IMP run appends its own level first, then the lower levels it passed through
    recs = [rec("imp", 0.672, 1), rec("imp", 0.488, 1), rec("isp", 0.488, 0), rec("imp", 0.672, 0),
            rec("imp", 0.488, 0), rec("isp", 0.672, 0)]
    groups = report.study_groups(recs)
    assert list(groups) == [("imp", 0.488), ("imp", 0.672), ("isp", 0.488), ("isp", 0.672)]
    assert [r["seed"] for r in groups[("imp", 0.672)]] == [0, 1]


def test_plot_legend_seed_count_shows_a_range_while_a_grid_is_incomplete():
    from instantsoup import report

    assert report.seed_count([{"seeds": [0, 1, 2]}, {"seeds": [0, 1, 2]}]) == "3"
    assert report.seed_count([{"seeds": [0, 1, 2]}, {"seeds": [0]}]) == "1-3"


def test_parallel_workers_take_imp_runs_first(tiny_bert_dir, tmp_path):
    path = write_study(tmp_path, tiny_bert_dir, seeds=(0, 1), methods=[
        {"label": "omp", "method": "omp"},
        {"label": "imp", "method": "imp", "prune": {"step": 0.3}, "sparsities": [0.3, 0.51]},
        {"label": "dense", "method": "dense"}])
    cells = S.load_study(path).cells()
    order = [c.key for c in S.longest_first(cells)]
    assert order[:4] == ["imp/0.51/0", "imp/0.51/1", "imp/0.3/0", "imp/0.3/1"]
    rest = [c.key for c in cells if not c.key.startswith("imp/")]
    assert order[4:] == rest  # the others keep the grid's order


def test_imp_cells_must_be_natural_levels(tiny_bert_dir, tmp_path):
    path = write_study(tmp_path, tiny_bert_dir, methods=[
        {"label": "imp", "method": "imp", "prune": {"step": 0.3}, "sparsities": [0.4, 0.51]}])
    with pytest.raises(SettingsError, match="not one of IMP's natural levels"):
        S.load_study(path)
