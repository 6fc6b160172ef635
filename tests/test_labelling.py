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
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from drift.config import SamplerSettings
from drift.data.preferences import read_pairs
from drift.data.validation import validate_preferences
from drift.errors import DriftError
from drift.plots import to_pil
from mlops.labelling.access import RATER_TOKENS_ENV, TOKEN_ENV, Access, access_for
from mlops.labelling.generator import from_directory
from mlops.labelling.server import LabelServer
from mlops.labelling.session import LabelSession
from tests.conftest import ROOT, local_registry

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PROMPTS = ["a cat", "a red dog", "a blue car"]
WAIT = 60  # seconds for a pair to appear (each is drawn on demand)


@pytest.fixture(scope="module")
def generator(tiny_sd3_dir):
    return from_directory(tiny_sd3_dir, SamplerSettings(num_steps=2, noise_level=0.7))


@contextmanager
def serving(generator, out: Path, access: Access | None = None):
    """A labelling server on a free port of 127.0.0.1, in a thread."""
    server = LabelServer(LabelSession(generator, PROMPTS, out, seed=0), access=access)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served(generator, tmp_path):
    with serving(generator, tmp_path / "prefs") as server:
        yield server


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
                 "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, to see failed requests
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


def call(url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    """GET (or POST ``body`` as JSON), with ``token`` as the bearer credential: (status, reply)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, None if body is None else json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def post(url: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    return call(url, body, token)


def get(url: str, token: str | None = None) -> dict:
    status, reply = call(url, token=token)
    assert status == 200, reply
    return reply


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
    # at 1280x900 the footer (versioning button, model line) is in view, and the console has no errors
    assert browser.execute_script("return [innerWidth, outerHeight]") == [1280, 900]
    assert browser.execute_script("return document.querySelector('footer').getBoundingClientRect().bottom") <= \
        browser.execute_script("return innerHeight")
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


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
        200, {"recorded": None, "undo": None, "total": 22, "mine": 0})
    assert len(read_pairs(prefs / "pairs.csv")) == 22


def test_undo_removes_exactly_the_raters_last_answer_while_another_answers(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, prefs = served.url, served.session.out
    browser.get(url)
    browser.find_element(By.ID, "rater").send_keys("ana")
    for n, choice in enumerate(["first", "second", "tie"], start=1):
        page_ready(browser, n)
        act(browser, "click", choice)
    page_ready(browser, 4)
    ana = read_pairs(prefs / "pairs.csv")
    assert ana["choice"].tolist() == ["first", "second", "tie"]

    answered, stop, errors = [], threading.Event(), []

    def bo() -> None:  # a second rater keeps answering meanwhile
        try:
            while not stop.is_set() or len(answered) < 4:
                pair = get(f"{url}api/pair?rater=bo")
                status, reply = post(f"{url}api/choice", {"token": pair["token"], "choice": "first", "rater": "bo"})
                assert status == 200, reply
                answered.append(reply)
        except Exception as err:  # noqa: BLE001 - reported by the main thread
            errors.append(repr(err))

    thread = threading.Thread(target=bo)
    thread.start()
    progress = browser.find_element(By.ID, "progress")
    act(browser, "key", "u")
    WebDriverWait(browser, WAIT).until(lambda d: progress.text.startswith("This session: 2 pairs"))
    act(browser, "click", "undo")
    WebDriverWait(browser, WAIT).until(lambda d: progress.text.startswith("This session: 1 pair ·"))
    stop.set()
    thread.join()
    assert not errors, errors
    assert browser.find_element(By.ID, "message").text == "Your last answer was removed."

    table = read_pairs(prefs / "pairs.csv")
    mine = table[table["annotator"] == "ana"]
    assert mine["pair_id"].tolist() == ana["pair_id"].tolist()[:1]  # exactly the last two, newest first
    assert sorted(table.loc[table["annotator"] == "bo", "pair_id"]) == sorted(r["recorded"] for r in answered)
    for row in ana.iloc[1:].itertuples():
        assert not (prefs / row.image_a).exists() and not (prefs / row.image_b).exists()
    assert validate_preferences(table, prefs).success
    assert table["shown_at"].notna().all() and (table["shown_at"] <= table["timestamp"]).all()

    # an undo handle is its rater's alone, and works once
    handle = answered[-1]["undo"]
    assert post(f"{url}api/undo", {"undo": handle, "rater": "ana"})[0] == 400
    assert post(f"{url}api/undo", {"undo": handle, "rater": "bo"})[0] == 200
    assert post(f"{url}api/undo", {"undo": handle, "rater": "bo"})[0] == 409
    assert len(read_pairs(prefs / "pairs.csv")) == len(table) - 1


def test_raters_beyond_this_machine_sign_in_with_their_own_token(browser, generator, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tokens = {"ana": "ana-" + "a" * 20, "bo": "bo-" + "b" * 20}
    with serving(generator, tmp_path / "prefs", Access(raters=dict(tokens))) as server:
        url, prefs = server.url, server.session.out
        pair = get(f"{url}api/pair", tokens["bo"])
        requests = [("api/info", None), ("api/pair?rater=bo", None), ("api/dvc", {}),
                    ("api/choice", {"token": pair["token"], "choice": "first", "rater": "bo"}),
                    ("api/undo", {"undo": "x", "rater": "bo"})]
        for path, body in requests:  # no token, and a wrong one: 401, nothing written
            assert call(url + path, body)[0] == 401 and call(url + path, body, "c" * 24)[0] == 401, path
        assert not (prefs / "pairs.csv").exists()
        # another rater's token: recorded as that token's rater, whatever name the request gives
        status, reply = post(f"{url}api/choice", {"token": pair["token"], "choice": "first", "rater": "ana"},
                             tokens["bo"])
        assert status == 200 and read_pairs(prefs / "pairs.csv")["annotator"].tolist() == ["bo"]
        assert post(f"{url}api/undo", {"undo": reply["undo"]}, tokens["ana"])[0] == 400  # not ana's to undo
        assert len(read_pairs(prefs / "pairs.csv")) == 1

        browser.get(url)
        field = browser.find_element(By.ID, "access-token")
        WebDriverWait(browser, WAIT).until(lambda d: field.is_displayed())
        field.send_keys(tokens["ana"])
        browser.find_element(By.CSS_SELECTOR, "#signin button").click()
        page_ready(browser, 1)
        assert browser.find_element(By.ID, "signed-in").text == "Signed in as ana"
        assert not browser.find_element(By.ID, "rater").is_displayed()
        act(browser, "click", "second")
        page_ready(browser, 2)
        assert browser.current_url == url  # the token never travels in the address
        assert browser.execute_script("return localStorage.getItem('drift-label-token')") == tokens["ana"]
        table = read_pairs(prefs / "pairs.csv")
        assert table["annotator"].tolist() == ["bo", "ana"] and table["choice"].tolist() == ["first", "second"]


def test_credentials_come_from_options_or_the_environment():
    with pytest.raises(DriftError, match="lets anyone who can reach the port write"):
        access_for("0.0.0.0", environ={})
    assert access_for("127.0.0.1", environ={}).mode == "open" and access_for("::1", environ={}).mode == "open"
    shared = access_for("0.0.0.0", environ={TOKEN_ENV: "t" * 16})
    assert shared.mode == "shared" and shared.rater("t" * 16, " cy ") == "cy"
    with pytest.raises(DriftError, match="at least 16"):
        access_for("0.0.0.0", "short", environ={})
    team = access_for("0.0.0.0", environ={RATER_TOKENS_ENV: f"ana={'a' * 16}, bo"})
    assert team.mode == "rater" and team.generated == ["bo"] and team.rater("a" * 16, "bo") == "ana"
    assert team.raters["bo"] in team.describe("http://host:8750/")  # the made invite is printed for the organiser
    with pytest.raises(DriftError, match="not both"):
        access_for("0.0.0.0", "t" * 16, ["ana"], environ={})


def _register(tiny_sd3_dir, tmp_path) -> str:
    """The tiny pipeline as version 1 of 'tiny-gen' (alias champion) in a temporary MLflow store, as
    versions were registered before runs stored adapters (the whole pipeline as 'pipeline')."""
    from mlops.model_registry import register_version
    from mlops.pyfunc_model import GENERATOR_CODE

    sampling = tmp_path / "sampling.json"
    sampling.write_text(json.dumps({"num_steps": 2, "noise_level": 0.7, "guidance_scale": 1.0}))
    with local_registry(tmp_path, "label-test") as (uri, client):
        version = register_version("tiny-gen", GENERATOR_CODE,
                                   {"pipeline": str(tiny_sd3_dir), "sampling": str(sampling)}, {})
        client.set_registered_model_alias("tiny-gen", "champion", version)
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

    # a version that is not there, or a page open to the network: one line, exit 2
    assert mlops_cli.main(["label", "-c", str(config), "--tracking-uri", uri, "--alias", "nope"]) == 2
    assert "has no version with alias 'nope' of model 'tiny-gen'" in capsys.readouterr().err
    assert mlops_cli.main(["label", "-c", str(config), "--tracking-uri", uri, "--host", "0.0.0.0"]) == 2
    assert "lets anyone who can reach the port write preference data" in capsys.readouterr().err

    token = "eve-" + "e" * 20  # a per-rater token from the environment
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri, RATER_TOKENS_ENV: f"eve={token}"}
    server = subprocess.Popen([sys.executable, "-m", "mlops.cli", "label", "-c", str(config), "--port", "0",
                               "--seed", "1"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        lines = []
        for line in server.stdout:
            lines.append(line)
            if line.startswith("  Ctrl-C stops it"):
                break
        start = "".join(lines)
        assert "enter their own invite token" in start and token not in start, start
        url = next(line.split()[-1] for line in lines if line.startswith("labelling page: "))
        assert call(f"{url}api/pair")[0] == 401
        assert "tiny-gen version 1" in get(f"{url}api/info", token)["model"]
        pair = get(f"{url}api/pair", token)
        assert post(f"{url}api/choice", {"token": pair["token"], "choice": "first"}, token)[0] == 200
        status, versioned = post(f"{url}api/dvc", {}, token)
        assert status == 200 and versioned["ok"], versioned
        first_version = (repo / "data" / "prefs.dvc").read_text()
        pair = get(f"{url}api/pair", token)
        assert post(f"{url}api/choice", {"token": pair["token"], "choice": "tie"}, token)[0] == 200
        server.send_signal(signal.SIGINT)
        out, _ = server.communicate(timeout=120)
    finally:
        server.kill()
    assert server.returncode == 0, start + out
    assert "versioned data/prefs with DVC" in out
    assert (repo / "data" / "prefs.dvc").read_text() != first_version  # the second choice is in the new version
    table = read_pairs(repo / "data" / "prefs" / "pairs.csv")
    assert table["choice"].tolist() == ["first", "tie"] and (table["annotator"] == "eve").all()
    assert (table["model"] == "tiny-gen").all() and (table["model_version"] == "1").all()
