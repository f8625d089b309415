"""docs/add-a-use-case.md, followed step by step on its own generated orders, so the tutorial
cannot rot.

The files the page shows are written as it shows them, the commands it runs are run, and the
warehouse is then checked: a third use case, added by a YAML file and a feature function only.
The same declaration switched to a regression proves the factory on the other objective.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from batch_platform import catalog, cli
from batch_platform.platform.dates import days_between
from batch_platform.platform.storage.lake import lake_of
from batch_platform.settings import Settings

TUTORIAL = Path(__file__).parent.parent / "docs" / "add-a-use-case.md"
FIRST, LAST = dt.date(2024, 3, 1), dt.date(2024, 3, 28)
SCORED = (dt.date(2024, 3, 22), dt.date(2024, 3, 28))
ORDERS_A_DAY = 200


def tutorial_files() -> dict[str, str]:
    text = TUTORIAL.read_text()
    return dict(re.findall(r"<!-- file: (\S+) -->\n```\w+\n(.*?)```", text, re.S))


def tutorial_commands() -> list[list[str]]:
    text = TUTORIAL.read_text()
    blocks = re.findall(r"<!-- step -->\n```bash\n(.*?)```", text, re.S)
    return [shlex.split(line)[1:] for block in blocks for line in block.strip().splitlines()]


def landed_orders(landing_dir: Path) -> pl.DataFrame:
    """The orders the page's lander wrote, a file a Paris day, as the feed's text."""
    files = sorted((landing_dir / "orders").glob("*.csv"))
    assert [f.stem for f in files] == [str(day) for day in days_between(FIRST, LAST)]
    return pl.concat([pl.read_csv(f, infer_schema=False) for f in files]).with_columns(
        pl.col("basket_value").cast(pl.Float64))


@pytest.fixture
def tutorial_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The page's folder, written from the page, and a data directory of its own."""
    root = tmp_path / "my_use_cases"
    root.mkdir()
    (root / "__init__.py").write_text("")
    for name, content in tutorial_files().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    monkeypatch.setenv("BATCH_PLATFORM_USE_CASES_DIR", str(root))
    monkeypatch.setenv("BATCH_PLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "data" / "dagster"))
    sys.modules.pop("my_use_cases", None)
    yield root
    sys.modules.pop("my_use_cases", None)


def query(data_dir: Path, sql: str) -> pl.DataFrame:
    with lake_of(Settings(data_dir=data_dir)).read_only() as con:
        return con.execute(sql).pl()


def test_the_tutorial_page_declares_checks_and_runs_its_steps(
        tutorial_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert set(tutorial_files()) == {"orders/defs.yaml", "orders/features.py",
                                     "orders/landing.py"}
    data_dir = tutorial_dir.parent / "data"
    commands = tutorial_commands()
    assert [c[0] for c in commands] == ["use-cases", "land", "train", "score", "sql"]
    for command in commands:
        assert cli.main(command) == 0, command
    orders = landed_orders(data_dir / "landing")
    assert orders.height == 28 * ORDERS_A_DAY
    # Landing again writes nothing: the same day gets the same file.
    assert cli.main(["land", "--use-case", "orders"]) == 0
    out = capsys.readouterr().out
    assert "0 file(s) written, 28 unchanged" in out
    # The three use cases are listed, the new one where it was declared.
    assert re.search(r"^orders: Will an order be returned\?", out, re.M)
    assert f"declared in  {tutorial_dir / 'orders'}/defs.yaml" in out
    assert re.search(r"^flights: ", out, re.M) and re.search(r"^temperature: ", out, re.M)
    # Every order of the scored week has exactly one prediction, by the registered champion.
    scored = orders.filter(pl.col("order_id").str.slice(2, 8).is_between(
        pl.lit(f"{SCORED[0]:%Y%m%d}"), pl.lit(f"{SCORED[1]:%Y%m%d}")))
    predictions = query(data_dir, "SELECT * FROM predictions.orders")
    assert predictions.height == scored.height == 7 * ORDERS_A_DAY
    assert predictions.get_column("order_id").n_unique() == predictions.height
    champion = query(data_dir, "SELECT * FROM models.registry WHERE use_case = 'orders'")
    assert champion.height == 1 and champion.item(0, "objective") == "binary"
    assert set(predictions.get_column("model_version")) == {champion.item(0, "model_version")}
    assert champion.item(0, "auc") > 0.6  # the returns depend on channel and basket
    report = query(data_dir, "SELECT * FROM reports.orders_daily WHERE segment_type = 'all'")
    assert report.height == 7 and report.get_column("rows").to_list() == [ORDERS_A_DAY] * 7
    assert (report.get_column("realised_positive").sum()
            == scored.filter(pl.col("returned") == "true").height)
    assert "predicted_positive" in out and "realised_positive" in out  # the page's query
    # Rerunning a day replaces it: no duplicate.
    assert cli.main(["score", "--use-case", "orders", "--date", str(SCORED[1])]) == 0
    again = query(data_dir, "SELECT count(*) AS n FROM predictions.orders").item()
    assert again == 7 * ORDERS_A_DAY


def test_the_same_declaration_as_a_regression(tutorial_dir: Path) -> None:
    """Objective switched to regression, label to the basket value: the factory builds the
    other objective's outputs, metrics and report from the same folder."""
    declaration = tutorial_dir / "orders" / "defs.yaml"
    text = declaration.read_text()
    text = (text.replace("objective: binary", "objective: regression")
            .replace("    threshold: {policy: f1}\n", "")
            .replace("label: returned", "label: basket_value")
            .replace("columns: [channel, items, basket_value, first_order, hour]",
                     "columns: [channel, items, first_order, hour]")
            .replace("drift: [channel, items, basket_value]", "drift: [channel, items]"))
    declaration.write_text(text)
    features = tutorial_dir / "orders" / "features.py"
    features.write_text(features.read_text().replace('        "returned",\n', ""))
    data_dir = tutorial_dir.parent / "data"
    assert cli.main(["land", "--use-case", "orders"]) == 0
    orders = landed_orders(data_dir / "landing")
    assert cli.main(["train", "--use-case", "orders"]) == 0
    assert cli.main(["score", "--use-case", "orders", "--from", str(SCORED[0]),
                     "--to", str(SCORED[1])]) == 0
    predictions = query(data_dir, "SELECT * FROM predictions.orders")
    assert predictions.height == 7 * ORDERS_A_DAY
    assert {"prediction", "prediction_low", "prediction_high"} <= set(predictions.columns)
    assert "score" not in predictions.columns
    assert (predictions.get_column("prediction_low") <= predictions.get_column("prediction")
            ).all() and (predictions.get_column("prediction")
                         <= predictions.get_column("prediction_high")).all()
    model = query(data_dir, "SELECT * FROM models.registry WHERE use_case = 'orders'")
    assert model.item(0, "objective") == "regression" and model.item(0, "auc") is None
    # Items explain most of a basket: the model beats predicting the training mean.
    actual = orders.filter(pl.col("order_id").is_in(predictions.get_column("order_id")
                                                    .implode()))
    joined = predictions.join(actual.select("order_id", "basket_value"), on="order_id")
    mae = (joined.get_column("prediction") - joined.get_column("basket_value")).abs().mean()
    baseline = (joined.get_column("basket_value")
                - orders.get_column("basket_value").mean()).abs().mean()
    assert mae < 0.8 * baseline
    report = query(data_dir, "SELECT * FROM reports.orders_daily WHERE segment_type = 'all'")
    assert report.height == 7
    assert report.get_column("mae").to_list() == pytest.approx(
        joined.group_by(pl.col("order_id").str.slice(2, 8).alias("day")).agg(
            (pl.col("prediction") - pl.col("basket_value")).abs().mean().alias("mae"))
        .sort("day").get_column("mae").to_list())
    assert set(catalog.folders()) >= {catalog.SHIPPED, tutorial_dir}
