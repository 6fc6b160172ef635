"""The ZenML pipeline end to end, exactly as users run it (`zenml pipeline run ... -c CONFIG`), in a
temporary ZenML home whose stack keeps the MLflow tracking and registry store."""

import pytest

from tests.conftest import model_versions, registry, run_pipeline, small_config


def small(testbed, **kw):
    base = {"train.iterations": 20, "eval.every": 10, "registry.model_name": "drift-digits-test"}
    return small_config(testbed, **{**base, **kw})


def test_pipeline_registers_champion_then_rejects_a_worse_challenger(testbed, zen_env, tmp_path):
    first = run_pipeline(zen_env, small(testbed), tmp_path, "first")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    client = registry(zen_env)
    v1 = client.get_model_version_by_alias("drift-digits-test", "champion")
    assert client.get_model_version_by_alias("drift-digits-test", "challenger").version == v1.version
    for tag in ("alignment", "diversity", "vendi", "data.dvc_md5", "data.git_revision", "promotion"):
        assert tag in v1.tags, tag

    run = client.get_run(v1.tags["mlflow_run_id"])
    metrics = run.data.metrics
    for key in ("reward_mean", "diversity", "kept_fraction", "clip_fraction", "eval/alignment", "final/alignment",
                "final/vendi", "reference/diversity"):
        assert key in metrics, key
    assert len(client.get_metric_history(run.info.run_id, "reward_mean")) == 20
    assert run.data.tags["data.data_md5"] and run.data.tags["promotion.decision"] == "promoted"
    artifacts = {a.path for d in ("grids", "plots") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"grids/reference.png", "grids/side_by_side.png", "plots/pareto.png"} <= artifacts

    # The registered model generates images from a DataFrame of prompts.
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(zen_env["tracking_uri"])
    model = mlflow.pyfunc.load_model("models:/drift-digits-test@champion")
    out = model.predict(pd.DataFrame({"prompt": ["the number 3", "a handwritten digit seven"], "seed": [1, 2]}))
    assert len(out) == 2 and all(len(s) > 50 for s in out["image_png_base64"])

    worse = run_pipeline(zen_env, small(testbed, **{"train.iterations": 1, "eval.every": 1}), tmp_path, "worse")
    assert worse.returncode == 0, worse.stdout[-3000:] + worse.stderr[-3000:]
    challenger = client.get_model_version_by_alias("drift-digits-test", "challenger")
    champion = client.get_model_version_by_alias("drift-digits-test", "champion")
    assert int(challenger.version) == int(v1.version) + 1
    assert champion.version == v1.version, (v1.tags["alignment"], challenger.tags["alignment"])
    assert challenger.tags["promotion"].startswith("not promoted")


BAD_FILES = {
    "blank": "prompt,split\n" + "".join(f"the number {i},train\n" for i in range(6)) + "   ,eval\n"
             + "".join(f"a drawing of the digit {i},eval\n" for i in range(5)),
    "duplicate": "prompt,split\n" + "the number 1,train\n" * 6 + "".join(f"digit {i} by hand,eval\n" for i in range(5)),
    "overlong": "prompt,split\n" + "".join(f"the number {i},train\n" for i in range(6)) + "x" * 500 + ",eval\n"
                + "".join(f"a drawing of the digit {i},eval\n" for i in range(5)),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_invalid_prompt_file_fails_before_any_model_and_registers_nothing(testbed, zen_env, tmp_path, kind):
    bad = tmp_path / f"{kind}.csv"
    bad.write_text(BAD_FILES[kind])
    name = f"drift-digits-bad-{kind}"
    result = run_pipeline(zen_env, small(testbed, **{"data.prompts": str(bad), "registry.model_name": name}),
                          tmp_path, f"bad-{kind}")
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "INVALID" in log and "FAILED" in log
    assert "sample_reference" not in log.split("INVALID")[0].split("validate_prompts")[-1]
    assert model_versions(registry(zen_env), name) == []
