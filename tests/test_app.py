"""The Gradio demo: its pieces in-process, then the real page in Debian's Chromium (marked `browser`).

The browser tests start `python -m food101hf.app` on 127.0.0.1 and drive /usr/bin/chromium through
/usr/bin/chromedriver with Selenium (no browser or driver download). Skip them with `-m "not browser"`; without
Chromium they are skipped, except in CI (CI=true), where that is a failure. Screenshots go to
outputs/browser-tests/.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CLASSES, ROOT, export_model_folder, free_port, run_script, wait_for_port, write_image_folder
from food101hf.app import build_demo, classify, main, model_summary
from food101hf.errors import ModelNotFoundError
from food101hf.outputs import example_images
from food101hf.predict import Predictor

SCREENSHOTS = ROOT / "outputs" / "browser-tests"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A model whose (local) dataset is at hand, as train.py leaves it."""
    root = tmp_path_factory.mktemp("app")
    write_image_folder(root / "food" / "train", CLASSES, per_class=2, size=(64, 48))
    write_image_folder(root / "food" / "validation", CLASSES, per_class=2, size=(64, 48), seed=1)
    return export_model_folder(root / "model", sorted(CLASSES), dataset=str(root / "food"))


@pytest.fixture(scope="module")
def predictor(served):
    return Predictor(served)


def test_examples_come_from_the_models_validation_split_when_it_is_here(served, tmp_path):
    examples = example_images(served, tmp_path / "written")
    assert [Path(e).parent.name for e in examples] == sorted(CLASSES)
    assert all("/food/validation/" in e for e in examples)
    hub_model = export_model_folder(tmp_path / "hub", sorted(CLASSES), dataset="ethz/food101")
    assert example_images(hub_model, tmp_path / "written") == []  # not in this machine's datasets cache
    gone = export_model_folder(tmp_path / "gone", sorted(CLASSES), dataset=str(tmp_path / "deleted"))
    assert example_images(gone, tmp_path / "written") == []
    assert not (tmp_path / "written").exists()  # nothing written for a local folder's own files


def test_the_panel_shows_reported_results_split_resolution_and_dataset(served, tmp_path):
    text = model_summary(served)
    assert "top-1 50.0% (95% interval 22.7%-77.3%) on 9 validation images at 32 px" in text  # 3 classes: no top-5
    assert "`food` (a local image folder)" in text
    demo = export_model_folder(tmp_path / "demo", sorted(CLASSES), dataset="demo")
    assert "synthetic drawings, so it will not recognise real photos" in model_summary(demo)


def test_classify_gives_gradio_label_scores_or_a_readable_message(predictor, served, tmp_path):
    photo = example_images(served, tmp_path)[0]
    scores, message = classify(predictor, {"path": photo, "orig_name": "dish.jpg"})
    assert message == "" and scores == predictor.label_scores(photo, top_k=5)
    notes = tmp_path / "upload" / "notes.jpg"
    notes.parent.mkdir()
    notes.write_text("not an image")
    scores, message = classify(predictor, {"path": str(notes), "orig_name": "holiday.jpg"})
    assert scores is None and message.startswith("⚠️ holiday.jpg: cannot be read as an image")
    assert str(tmp_path) not in message and "Traceback" not in message
    Image.new("1", (15000, 15000)).save(tmp_path / "bomb.png")  # 225 M pixels: over Pillow's limit
    scores, message = classify(predictor, {"path": str(tmp_path / "bomb.png"), "orig_name": "bomb.png"})
    assert scores is None and "bomb.png: cannot be read as an image" in message and "exceeds limit" in message
    Image.fromarray(np.full((40, 48), 40000, dtype=np.uint16)).save(tmp_path / "sixteen.png")  # odd mode: fine
    assert len(classify(predictor, {"path": str(tmp_path / "sixteen.png")})[0]) == 3
    assert classify(predictor, None) == (None, "")  # the image was cleared


def test_build_demo_wires_image_to_label_and_message(served, predictor):
    demo = build_demo(served, predictor=predictor)
    blocks = {type(b).__name__ for b in demo.blocks.values()}
    assert {"Image", "Label", "Markdown", "Dataset"} <= blocks  # Dataset: the examples
    image = next(b for b in demo.blocks.values() if type(b).__name__ == "Image")
    assert set(image.sources) == {"upload", "clipboard", "webcam"}
    returns = demo.get_api_info()["named_endpoints"]["/classify"]["returns"]
    assert [r["label"] for r in returns] == ["Top 5", "message"]  # the API's names, not value_6


def test_share_server_name_and_port_pass_through_to_launch(served, monkeypatch, capsys):
    import gradio

    launched = {}
    def launch(self, **kwargs):
        launched.update(kwargs)
        self.local_url = "http://127.0.0.1:7861/"

    monkeypatch.setattr(gradio.Blocks, "launch", launch)
    monkeypatch.setattr(gradio.Blocks, "block_thread", lambda self: None)
    assert main(["--model", str(served), "--share", "--server-name", "0.0.0.0", "--server-port", "7861"]) == 0
    assert launched | {"max_file_size": None} == {"share": True, "server_name": "0.0.0.0", "server_port": 7861,
                                                  "max_file_size": None, "quiet": True, "prevent_thread_lock": True}
    assert main(["--model", str(served)]) == 0  # Gradio's defaults (and GRADIO_SERVER_* on a Space) then apply
    assert (launched["share"], launched["server_name"], launched["server_port"]) == (False, None, None)
    assert capsys.readouterr().out.splitlines()[-1] == (f"Serving {served} on http://127.0.0.1:7861/   (Ctrl-C stops "
                                                        f"it; --share adds a public gradio.live link)")


def test_an_unloadable_model_is_one_line_and_exit_2(tmp_path):
    with pytest.raises(ModelNotFoundError):
        main(["--model", str(tmp_path / "missing")])
    result = run_script("-m", "food101hf.app", "--model", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: --model {tmp_path / 'missing'}: no such folder"]


# --- the real page in Chromium ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def app_url(served):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, "-m", "food101hf.app", "--model", str(served), "--server-name",
                                "127.0.0.1", "--server-port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait_for_port(port, process):
        process.kill()
        pytest.fail(f"the app did not start: {process.stdout.read()}")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium and chromium-driver (.ci/run does)")
        pytest.skip("needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="food101hf-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # a driver path: no Selenium Manager
    driver.implicitly_wait(0)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait_for_text(driver, css: str, timeout: float = 60) -> str:
    """The first non-empty text of an element matching `css`, waiting for the app to answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def found(d):
        texts = [e.text.strip() for e in d.find_elements(By.CSS_SELECTOR, css)]
        return next((t for t in texts if t), False)

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(found)


def _upload(driver, url: str, path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    file_input = WebDriverWait(driver, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, "input[type=file]"))
    file_input.send_keys(str(path))  # what choosing the file in the upload dialog does


@pytest.mark.browser
def test_browser_upload_shows_the_predicted_dish(app_url, browser, served, predictor):
    photo = Path(example_images(served, Path("unused"))[1])
    _upload(browser, app_url, photo)
    shown = _wait_for_text(browser, "[data-testid=label-output-value]")
    assert shown == predictor(str(photo), top_k=1)[0]["label"]
    body = browser.find_element("tag name", "body").text
    assert "Reported: top-1 50.0%" in body and "Examples from the model's validation split" in body
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "upload.png"))


@pytest.mark.browser
def test_browser_text_file_uploads_get_a_message_in_the_page(app_url, browser, tmp_path):
    # a .txt file: Gradio's page refuses it by type before it reaches the server
    (tmp_path / "notes.txt").write_text("not an image")
    _upload(browser, app_url, tmp_path / "notes.txt")
    assert "Invalid file type: notes.txt. Only image/* allowed." in _wait_for_text(browser, ".toast-body, .toast-wrap")
    # text named .jpg passes the page's check: the server answers with our message, no stack trace
    (tmp_path / "menu.jpg").write_text("not an image either")
    _upload(browser, app_url, tmp_path / "menu.jpg")
    message = _wait_for_text(browser, "#message")
    assert message.startswith("⚠️ menu.jpg: cannot be read as an image") and "Please upload a photo" in message
    assert "Traceback" not in browser.find_element("tag name", "body").text
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "not-an-image.png"))
