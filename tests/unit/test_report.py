"""The report layer: PNG plots written atomically, Markdown tables, and Markdown + HTML reports."""

from __future__ import annotations

import re
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from plmkit.report.plots import (
    best_index,
    layer_labels,
    min_max_scale,
    plot_by_layer,  # noqa: E402
    plot_confusion,
    plot_layer_weights,
    plot_learning_curves,
    plot_loss_curve,
    plot_per_type,
)
from plmkit.report.tables import Report, fmt, markdown_table, to_markdown, write_report  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _names(d):
    return sorted(p.name for p in d.iterdir())


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 0 and pixels.shape[1] > 0


@pytest.fixture(autouse=True)
def no_open_figures():
    yield
    assert plt.get_fignums() == []  # every plot closes its figure, on success and on failure


def _run(steps: int, epochs: int, base: float) -> dict:
    return {
        "losses": [[s, base / s] for s in range(1, steps + 1)],
        "history": [
            {"epoch": e, "step": e * steps // epochs, "accuracy": 0.5 + 0.1 * e, "seconds": 1.0}
            for e in range(1, epochs + 1)
        ],
    }


# -- pure helpers ---------------------------------------------------------------------------------


def test_layer_labels():
    assert layer_labels(4) == ["emb", "1", "2", "3"]
    assert layer_labels(1) == ["emb"]
    assert layer_labels(0) == []


def test_best_index_skips_missing_and_follows_direction():
    assert best_index([0.1, None, 0.9, float("nan"), 0.3]) == 2
    assert best_index([0.1, None, 0.9, 0.3], higher_is_better=False) == 0
    assert best_index([None, None]) is None


def test_min_max_scale():
    assert min_max_scale([1.0, None, 3.0, 2.0]) == [0.0, None, 1.0, 0.5]
    assert min_max_scale([1.0, 3.0], higher_is_better=False) == [1.0, 0.0]
    assert min_max_scale([0.7, 0.7, None]) == [1.0, 1.0, None]  # constant: no division by zero
    assert min_max_scale([None]) == [None]


# -- plots ----------------------------------------------------------------------------------------


def test_plot_layer_weights_writes_png(tmp_path):
    path = tmp_path / "weights.png"
    plot_layer_weights([0.1, 0.2, 0.3, 0.4], path, gamma=1.7)
    assert_png(path)
    assert _names(tmp_path) == ["weights.png"]


def test_plot_by_layer_writes_png_with_missing_values(tmp_path):
    path = tmp_path / "sub" / "by_layer.png"  # parents created
    plot_by_layer(
        {"reviews (accuracy)": [0.5, 0.7, None, 0.8], "cws (word F1)": [None, 0.6, 0.9]},
        path,
        ylabel="dev score",
        title="probe by layer",
    )
    assert_png(path)
    assert _names(path.parent) == ["by_layer.png"]


def test_plot_by_layer_normalise_constant_series(tmp_path):
    path = tmp_path / "norm.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # e.g. numpy's division by zero
        plot_by_layer(
            {"flat": [0.5, 0.5, 0.5], "rising": [0.1, None, 0.9], "empty": [None, None]},
            path,
            ylabel="ignored",
            title="normalised",
            normalise=True,
        )
    assert_png(path)
    assert _names(tmp_path) == ["norm.png"]


def test_plot_learning_curves_runs_of_different_lengths_and_empty_losses(tmp_path):
    path = tmp_path / "curves.png"
    runs = {
        "short": _run(10, 2, 2.0),
        "long": _run(300, 5, 3.0),
        "no-losses": {"losses": [], "history": []},
        "partial-history": {"losses": [[0, 1.0]], "history": [{"epoch": 1, "accuracy": None}, {"epoch": 2}]},
    }
    plot_learning_curves(runs, path, metric="accuracy")
    assert_png(path)
    assert _names(tmp_path) == ["curves.png"]


def test_plot_loss_curve_still_works(tmp_path):
    path = tmp_path / "loss.png"
    plot_loss_curve([[1, 3.0], [2, 2.5]], path, dev=[[2, 2.7]])
    assert_png(path)


def test_overwrite_replaces_the_plot(tmp_path):
    path = tmp_path / "w.png"
    plot_layer_weights([0.5, 0.5], path)
    first = path.read_bytes()
    plot_layer_weights([0.9, 0.05, 0.05], path, title="another")
    assert path.read_bytes() != first
    assert _names(tmp_path) == ["w.png"]


@pytest.mark.parametrize(
    "plot",
    [
        lambda p: plot_layer_weights([0.5, "heavy"], p),
        lambda p: plot_layer_weights([], p),
        lambda p: plot_layer_weights([0.5, float("inf")], p),
        lambda p: plot_by_layer({"a": [0.1, "abc"]}, p, ylabel="y", title="t"),
        lambda p: plot_by_layer({}, p, ylabel="y", title="t"),
        lambda p: plot_learning_curves({"a": {"losses": [[1, "x"]], "history": []}}, p, metric="accuracy"),
        lambda p: plot_learning_curves({}, p, metric="accuracy"),
        lambda p: plot_confusion([[1, 2]], ["a", "b"], p, "t"),
        lambda p: plot_confusion([], [], p, "t"),
        lambda p: plot_per_type({}, p, "t"),
    ],
)
def test_bad_values_leave_no_file_and_keep_the_old_one(tmp_path, plot):
    fresh = tmp_path / "fresh.png"
    with pytest.raises((ValueError, TypeError)):
        plot(fresh)
    assert not fresh.exists()
    old = tmp_path / "old.png"
    plot_layer_weights([0.5, 0.5], old)
    before = old.read_bytes()
    with pytest.raises((ValueError, TypeError)):
        plot(old)
    assert old.read_bytes() == before
    assert _names(tmp_path) == ["old.png"]


def test_unwritable_location_leaves_no_file(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OSError):
        plot_layer_weights([0.5, 0.5], blocker / "w.png")
    assert _names(tmp_path) == ["not-a-dir"]


def test_failure_while_writing_leaves_no_temp(tmp_path):
    target = tmp_path / "taken.png"
    target.mkdir()  # savefig writes the temporary, then the rename onto a folder fails
    with pytest.raises(OSError):
        plot_by_layer({"a": [0.1, 0.2]}, target, ylabel="y", title="t")
    assert _names(tmp_path) == ["taken.png"] and target.is_dir() and not any(target.iterdir())


# -- tables and reports ---------------------------------------------------------------------------


def test_fmt():
    assert fmt(None) == "–"
    assert fmt(3) == "3"
    assert fmt(0.123456) == "0.1235"
    assert fmt(0.5, digits=2) == "0.50"
    assert fmt("bert-base") == "bert-base"
    assert fmt(True) == "True"
    assert fmt(float("nan")) == "nan"


def test_markdown_table_exact():
    rows = [{"model": "bert|wwm", "acc": 0.91234, "n": 12}, {"model": "tiny", "acc": None}]
    table = markdown_table(rows, [("model", "Model"), ("acc", "Accuracy"), ("n", "Examples")])
    assert table == (
        "| Model | Accuracy | Examples |\n| --- | ---: | ---: |\n| bert\\|wwm | 0.9123 | 12 |\n| tiny | – | – |"
    )


def _sample_report() -> Report:
    rows = [{"model": "a", "acc": 0.9}, {"model": "b", "acc": 0.8}, {"model": "c <d>", "acc": None}]
    return Report(
        title="compare <tiny> & friends",
        blocks=[
            ("heading", "Results"),
            ("text", "Ran `plmkit compare` on <script>alert(1)</script> data.\n\nSecond paragraph with a lone ` tick."),
            ("table", (rows, [("model", "Model"), ("acc", "Accuracy")])),
            ("image", ("plots/by_layer.png", "accuracy by layer")),
            ("code", "plmkit compare --config a.yaml\nx < y && ```fenced```\n"),
        ],
    )


def test_write_report_markdown(tmp_path):
    md_path, html_path = write_report(_sample_report(), tmp_path / "out")
    assert (md_path.name, html_path.name) == ("report.md", "report.html")
    assert _names(tmp_path / "out") == ["report.html", "report.md"]
    md = md_path.read_text(encoding="utf-8")
    assert md == to_markdown(_sample_report())
    assert md.startswith("# compare <tiny> & friends\n\n## Results\n\n")
    assert "| Model | Accuracy |\n| --- | ---: |\n| a | 0.9000 |" in md
    assert "![accuracy by layer](plots/by_layer.png)" in md
    assert "````\nplmkit compare --config a.yaml\nx < y && ```fenced```\n````" in md  # fence outgrows the content


def test_write_report_html(tmp_path):
    _, html_path = write_report(_sample_report(), tmp_path, name="compare")
    assert html_path == tmp_path / "compare.html"
    page = html_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>compare &lt;tiny&gt; &amp; friends</title>" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<code>plmkit compare</code>" in page
    assert "<p>Second paragraph with a lone ` tick.</p>" in page
    assert page.count("<table>") == 1 and page.count("<tr>") == 1 + 3
    assert '<td class="num">0.9000</td>' in page and '<td class="num">–</td>' in page
    assert "<td>c &lt;d&gt;</td>" in page
    assert '<img src="plots/by_layer.png" alt="accuracy by layer">' in page
    assert "<pre><code>plmkit compare --config a.yaml\nx &lt; y &amp;&amp; ```fenced```</code></pre>" in page
    assert re.search(r"<style>.*max-width: 100%.*</style>", page, re.S)


def test_unknown_block_kind_lists_known_ones(tmp_path):
    with pytest.raises(ValueError, match="heading, text, table, image, code"):
        write_report(Report("t", [("chart", None)]), tmp_path)
    assert _names(tmp_path) == []


# -- evaluate's report ------------------------------------------------------------------------------


def test_confusion_and_per_type_plots(tmp_path):
    plot_confusion([[5, 1], [0, 7]], ["negative", "positive"], tmp_path / "c.png", "reviews")
    assert_png(tmp_path / "c.png")
    per_type = {"PER": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10}, "LOC": {"precision": 1.0,
                "recall": 0.5, "f1": 0.667, "support": 4}}  # fmt: skip
    plot_per_type(per_type, tmp_path / "t.png", "ner")
    assert_png(tmp_path / "t.png")


def test_write_evaluation_of_a_classifier(tmp_path):
    import json

    from plmkit.report.evaluation import write_evaluation

    metrics = {"accuracy": 0.75, "macro_f1": 0.7, "confusion": [[2, 1], [0, 1]], "examples": 4}
    written = write_evaluation(tmp_path / "eval", metrics, ["bad", "good"], "classification on dev.csv")
    assert _names(tmp_path / "eval") == ["confusion.png", "metrics.json", "report.html", "report.md"]
    assert sorted(p.name for p in written) == _names(tmp_path / "eval")
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == metrics
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "| bad | 2 | 1 |" in md and "| good | 0 | 1 |" in md and "![confusion matrix](confusion.png)" in md
    page = (tmp_path / "eval" / "report.html").read_text()
    assert 'src="confusion.png"' in page and "http" not in page.replace("http-equiv", "")  # opens offline


def test_write_evaluation_of_a_tagger(tmp_path):
    from plmkit.report.evaluation import write_evaluation

    per_type = {"LOC": {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 4}}
    write_evaluation(tmp_path, {"f1": 0.6667, "per_type": per_type, "sentences": 3}, ["O", "B-LOC", "I-LOC"], "ner")
    assert _names(tmp_path) == ["metrics.json", "per_type.png", "report.html", "report.md"]
    assert "| LOC | 1.0000 | 0.5000 | 0.6667 | 4 |" in (tmp_path / "report.md").read_text()
