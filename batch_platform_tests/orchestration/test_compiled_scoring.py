"""The predictions asset with the compiled scorer: chosen by a setting, proven, recorded."""

import dagster as dg
import numpy as np

from batch_platform.platform.scoring import compiled
from batch_platform_tests.conftest import WEEK, Platform, failure_messages


def predictions_metadata(result: dg.ExecuteInProcessResult) -> dict:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        assert materialization is not None
        if materialization.asset_key == dg.AssetKey(["predictions", "flights"]):
            return {k: v.value for k, v in materialization.metadata.items()}
    raise AssertionError("predictions/flights was not materialized")


def test_compiled_scorer_scores_a_day_and_says_so(own_platform: Platform) -> None:
    day = WEEK[1]
    before = own_platform.query("SELECT flight_id, score, scorer FROM predictions.flights "
                                "WHERE partition_date = ? ORDER BY flight_id", [day])
    assert set(before["scorer"]) == {"lightgbm"}
    compiled.clear_process_cache()
    result = own_platform.run("flights_predict", day,
                              settings=own_platform.settings.with_overrides(scorer="compiled"))
    assert result.success, failure_messages(result)
    metadata = predictions_metadata(result)
    assert metadata["scorer"] == "compiled"
    assert metadata["scorer_requested"] == "compiled"
    assert 0 <= metadata["parity_max_abs_diff"] <= compiled.PARITY_TOLERANCE
    assert metadata["parity_rows"] > before.height
    after = own_platform.query("SELECT flight_id, score, scorer FROM predictions.flights "
                               "WHERE partition_date = ? ORDER BY flight_id", [day])
    assert set(after["scorer"]) == {"compiled"}
    assert after["flight_id"].to_list() == before["flight_id"].to_list()
    np.testing.assert_allclose(after["score"].to_numpy(), before["score"].to_numpy(),
                               rtol=0, atol=1e-12)
    artifacts = list((own_platform.settings.models_dir / "flights" / "compiled").glob("*.o"))
    assert len(artifacts) == 1
