"""`drift label`: the page in a real headless Chromium (Debian's chromium and chromium-driver,
which .ci/run installs), raters clicking and typing through pairs, the rows and images written,
several raters at once, the registry as the model source, and `dvc add` on demand and on exit."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from drift.config import SamplerSettings
from drift.data.preferences import read_pairs
from drift.data.validation import validate_preferences
from drift.plots import to_pil
from mlops.labelling.generator import from_directory
from mlops.labelling.server import LabelServer
from mlops.labelling.session import LabelSession
from tests.conftest import ROOT

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PROMPTS = ["a cat", "a red dog", "a blue car"]
WAIT = 60  # seconds for a pair to appear (each is drawn on demand)


@pytest.fixture(scope="module")
def generator(tiny_sd3_dir):
    return from_directory(tiny_sd3_dir, SamplerSettings(num_steps=2, noise_level=0.7))


@pytest.fixture
def served(generator, tmp_path):
    """A labelling server on a free port of 127.0.0.1, in a thread."""
    server = LabelServer(LabelSession(generator, PROMPTS, tmp_path / "prefs", seed=0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through chromedriver. A machine without them fails here: a skipped browser
    test would hide a missing install step."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; .ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def page_ready(driver, pairs: int) -> str:
    """Wait until the page shows its ``pairs``-th pair and takes answers; return its prompt."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    main = driver.find_element(By.ID, "main")
    WebDriverWait(driver, WAIT).until(
        lambda d: main.get_attribute("data-pairs") == str(pairs) and main.get_attribute("data-state") == "ready")
    return driver.find_element(By.ID, "prompt").text


def act(driver, how: str, what) -> None:
    """Click the element with id ``what``, or press key ``what`` on the page."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    if how == "click":
        driver.find_element(By.ID, what).click()
    else:
        ActionChains(driver).send_keys(what).perform()


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        return json.load(response)


def image_array(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def test_a_rater_clicks_and_types_through_pairs(browser, served, generator):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    prefs = served.session.out
    browser.get(served.url)
    page_ready(browser, 1)
    act(browser, "click", "first")  # no name yet: refused on the page, nothing written
    assert "Enter your name" in browser.find_element(By.ID, "message").text
    assert not (prefs / "pairs.csv").exists()
    # a name full of shortcut keys: typing it answers nothing; Enter leaves the field
    browser.find_element(By.ID, "rater").send_keys("Tess 2", Keys.ENTER)

    steps = [("click", "first", "first"), ("key", "2", "second"), ("key", "t", "tie"), ("key", "s", None),
             ("key", Keys.ARROW_LEFT, "first"), ("click", "image-b", "second"), ("key", Keys.SPACE, None),
             ("key", Keys.ARROW_DOWN, "tie")]
    shown = []
    for n, (how, what, choice) in enumerate(steps, start=1):
        prompt = page_ready(browser, n)
        act(browser, how, what)
        if choice:
            shown.append((prompt, choice))
    page_ready(browser, len(steps) + 1)
    assert browser.find_element(By.ID, "progress").text == "This session: 6 pairs · In the data: 6 (yours: 6)"

    table = read_pairs(prefs / "pairs.csv")
    assert list(zip(table["prompt"], table["choice"])) == shown
    assert (table["annotator"] == "Tess 2").all() and (table["source"] == "label").all()
    assert (table["model"] == str(generator.name)).all() and table["model_version"].isna().all()
    assert table["pair_id"].is_unique and table["timestamp"].str.match(r"^\d{4}-\d\d-\d\dT").all()
    assert validate_preferences(table, prefs).success
    # each stored image is the one its recorded seed draws
    for row in table.itertuples():
        drawn = generator.images(row.prompt, (int(row.seed_a), int(row.seed_b)))
        assert np.array_equal(image_array(prefs / row.image_a), np.asarray(to_pil(drawn[0])))
        assert np.array_equal(image_array(prefs / row.image_b), np.asarray(to_pil(drawn[1])))

    browser.refresh()  # the name is remembered; the session count starts again
    page_ready(browser, 1)
    assert browser.find_element(By.ID, "rater").get_attribute("value") == "Tess 2"
    assert browser.find_element(By.ID, "progress").text == "This session: 0 pairs · In the data: 6 (yours: 6)"
    img = browser.find_element(By.ID, "image-a")
    assert img.value_of_css_property("image-rendering") == "pixelated" and img.size["width"] >= 200


def test_concurrent_raters_lose_and_duplicate_nothing(browser, served):
    from selenium.webdriver.common.by import By

    url, prefs = served.url, served.session.out
    errors = []

    def rater(name: str, rounds: int) -> None:
        try:
            for k in range(rounds):
                pair = get(f"{url}api/pair?rater={name}")
                status, reply = post(f"{url}api/choice", {"token": pair["token"], "rater": name,
                                                          "choice": ("first", "second", "tie")[k % 3]})
                assert status == 200 and reply["recorded"], reply
                status, again = post(f"{url}api/choice", {"token": pair["token"], "rater": name, "choice": "tie"})
                assert status == 409 and "already answered" in again["error"]  # a double submit records once
        except Exception as err:  # noqa: BLE001 - reported by the main thread
            errors.append(f"{name}: {err!r}")

    threads = [threading.Thread(target=rater, args=(name, 6)) for name in ("bo", "cy", "di")]
    browser.get(url)
    browser.find_element(By.ID, "rater").send_keys("ana")
    page_ready(browser, 1)
    for t in threads:
        t.start()
    for n in range(1, 5):  # the browser rater answers while the others post
        page_ready(browser, n)
        act(browser, "click", "second")
    page_ready(browser, 5)
    for t in threads:
        t.join()
    assert not errors, errors

    table = read_pairs(prefs / "pairs.csv")
    assert len(table) == 4 + 3 * 6 and table["pair_id"].is_unique
    assert table["annotator"].value_counts().to_dict() == {"bo": 6, "cy": 6, "di": 6, "ana": 4}
    assert validate_preferences(table, prefs).success
    assert sorted(p.name for p in prefs.iterdir()) == ["images", "pairs.csv"]  # no temporary files left
    assert len(list((prefs / "images" / "label").iterdir())) == 2 * len(table)

    # requests the page would never send are refused, and write nothing
    pair = get(f"{url}api/pair")
    assert post(f"{url}api/choice", {"token": pair["token"], "choice": "left", "rater": "bo"})[0] == 400
    assert post(f"{url}api/choice", {"token": pair["token"], "choice": "first", "rater": " "})[0] == 400
    plain = urllib.request.Request(f"{url}api/choice", b"token=x",
                                   {"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(plain, timeout=WAIT)
    assert refused.value.code == 400
    assert post(f"{url}api/choice", {"token": pair["token"], "choice": "skip", "rater": ""}) == (
        200, {"recorded": None, "total": 22, "mine": 0})
    assert len(read_pairs(prefs / "pairs.csv")) == 22


def _register(tiny_sd3_dir, tmp_path) -> str:
    """The tiny pipeline as version 1 of 'tiny-gen' (alias champion) in a temporary MLflow store."""
    import mlflow
    from mlflow import MlflowClient

    from mlops.model_registry import register_version
    from mlops.pyfunc_model import GENERATOR_CODE

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sampling = tmp_path / "sampling.json"
    sampling.write_text(json.dumps({"num_steps": 2, "noise_level": 0.7, "guidance_scale": 1.0}))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment("label-test", artifact_location=(tmp_path / "artifacts").as_uri())
        client = MlflowClient(uri, uri)
        with mlflow.start_run(experiment_id=experiment):
            version = register_version(client, "tiny-gen", GENERATOR_CODE,
                                       {"pipeline": str(tiny_sd3_dir), "sampling": str(sampling)}, {})
        client.set_registered_model_alias("tiny-gen", "champion", version)
    finally:
        mlflow.set_tracking_uri(previous)
    return uri


def test_drift_label_serves_the_champion_and_versions_the_data(tiny_sd3_dir, tmp_path, capsys):
    from drift.config import load_config
    from mlops import cli as mlops_cli

    uri = _register(tiny_sd3_dir, tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=repo, check=True)
    (repo / "prompts.csv").write_text("prompt,split\n" + "".join(f"{p},train\n" for p in PROMPTS) + "a house,eval\n")
    cfg = load_config(ROOT / "configs" / "retrain_local.yaml", {
        "model.source": str(tiny_sd3_dir), "data.prompts": str(repo / "prompts.csv"),
        "registry.model_name": "tiny-gen", "preferences.pairs": str(repo / "data" / "prefs" / "pairs.csv")})
    config = tmp_path / "label.yaml"
    config.write_text(yaml.safe_dump({"parameters": {"config": cfg.model_dump(mode="json")}}))

    # a version that is not there: one line, exit 2
    assert mlops_cli.main(["label", "-c", str(config), "--tracking-uri", uri, "--alias", "nope"]) == 2
    assert "has no version with alias 'nope' of model 'tiny-gen'" in capsys.readouterr().err

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri}
    server = subprocess.Popen([sys.executable, "-m", "mlops.cli", "label", "-c", str(config), "--port", "0",
                               "--seed", "1"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        lines = []
        for line in server.stdout:
            lines.append(line)
            if line.startswith("labelling page: "):
                break
        assert lines and lines[-1].startswith("labelling page: "), "".join(lines)
        url = lines[-1].split()[-1]
        assert "tiny-gen version 1" in get(f"{url}api/info")["model"]
        pair = get(f"{url}api/pair")
        assert post(f"{url}api/choice", {"token": pair["token"], "choice": "first", "rater": "eve"})[0] == 200
        status, versioned = post(f"{url}api/dvc", {})
        assert status == 200 and versioned["ok"], versioned
        first_version = (repo / "data" / "prefs.dvc").read_text()
        pair = get(f"{url}api/pair")
        assert post(f"{url}api/choice", {"token": pair["token"], "choice": "tie", "rater": "eve"})[0] == 200
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=120)
    finally:
        server.kill()
    assert server.returncode == 0, "".join(lines) + out
    assert "versioned data/prefs with DVC" in out
    assert (repo / "data" / "prefs.dvc").read_text() != first_version  # the second choice is in the new version
    table = read_pairs(repo / "data" / "prefs" / "pairs.csv")
    assert table["choice"].tolist() == ["first", "tie"]
    assert (table["model"] == "tiny-gen").all() and (table["model_version"] == "1").all()
