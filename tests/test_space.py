"""`python -m food101hf.hub space`: a Gradio Space serving a pushed model, created on tests/hub_server.py, and run."""

import os
import socket
import subprocess
import sys
import time

import gradio
import pytest
import yaml
from huggingface_hub import snapshot_download

from conftest import CLASSES, export_model_folder, write_image_folder
from food101hf.errors import HubError
from food101hf.hub import main
from food101hf.publish import push_folder
from food101hf.predict import Predictor
from food101hf.space import create_space
from test_publish import TOKEN, hub  # noqa: F401  the Hub fixture


@pytest.fixture
def pushed(hub, tmp_path):  # noqa: F811
    write_image_folder(tmp_path / "food" / "validation", CLASSES, per_class=2, size=(64, 48))
    folder = export_model_folder(tmp_path / "run", sorted(CLASSES), dataset=str(tmp_path / "food"))
    push_folder(folder, "food/model")
    return folder


def test_space_holds_app_package_pinned_requirements_examples_and_card(hub, pushed):  # noqa: F811
    assert main(["space", str(pushed), "food/model-demo"]) == 0
    files = hub.files("spaces/food/model-demo")
    assert {"README.md", "app.py", "requirements.txt", "food101hf/__init__.py", "food101hf/app.py",
            "food101hf/predict.py", "food101hf/images.py"} <= set(files)
    # only what the app imports: nothing of training, publishing or the metric module ships to a Space
    assert not {"food101hf/engine.py", "food101hf/checkpoint.py", "food101hf/publish.py", "food101hf/data.py",
                "food101hf/metrics/topk_accuracy.py"} & set(files)
    assert sorted(p for p in files if p.startswith("examples/")) == sorted(f"examples/{c}.jpg" for c in CLASSES)
    assert not [p for p in files if p.endswith((".pyc", ".bin", ".pkl", ".safetensors"))]
    metadata = yaml.safe_load(files["README.md"].decode().split("---")[1])
    assert metadata["sdk"] == "gradio" and metadata["sdk_version"] == gradio.__version__
    assert metadata["app_file"] == "app.py" and metadata["models"] == ["food/model"]
    assert metadata["license"] == "apache-2.0" and metadata["short_description"]
    requirements = files["requirements.txt"].decode().splitlines()
    assert "torch==2.14.1" in requirements and all("==" in line for line in requirements)
    assert any(line.startswith("timm==") for line in requirements)
    app = files["app.py"].decode()
    assert '"--model", "food/model"' in app and '"--examples", "examples"' in app
    # updating the Space from the repo id gives the same files
    create_space("food/model", "food/model-demo")
    assert set(hub.files("spaces/food/model-demo")) == set(files)


def test_a_space_needs_a_pushed_model(hub, tmp_path):  # noqa: F811
    folder = export_model_folder(tmp_path / "run", sorted(CLASSES))
    with pytest.raises(HubError, match="has not been pushed to the Hub.*hub push"):
        create_space(folder, "food/space")
    with pytest.raises(HubError, match="food/missing is not a model repo on the Hub"):
        create_space("food/missing", "food/space")
    assert "spaces/food/space" not in hub.repos


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_space_runs_and_classifies_like_the_model(hub, pushed, tmp_path):  # noqa: F811
    create_space("food/model", "food/model-demo")
    space = snapshot_download("food/model-demo", repo_type="space", local_dir=tmp_path / "space")
    port = _free_port()
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
           "HF_TOKEN": TOKEN, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": ""}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # as Spaces run it
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        assert process.poll() is None, process.stdout.read()
        from gradio_client import Client, handle_file

        example = os.path.join(space, "examples", f"{CLASSES[0]}.jpg")
        scores, message = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            handle_file(example), api_name="/classify")
        want = Predictor(pushed)(example, top_k=1)[0]["label"]
        assert scores["label"] == want and message == ""
    finally:
        process.terminate()
        process.wait(timeout=30)
