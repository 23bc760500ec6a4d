"""Every entry point as a user types it: a failure caused by a flag is one line on stderr, exit status 2, no
traceback, and nothing written; --help answers before the heavy libraries load and reads well."""

import configparser
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_script
from hub_server import HubServer

HUB_ENV = {"HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The error line of a failed run, after checking it failed as a user error should."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0].removeprefix("error: ")


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "9"], "--batch-size 9: Mixup/CutMix (--mixup 0.2, --cutmix 1.0) mixes each batch with its "
                            "mirror and needs an even batch per process; use 8 or 10, or --mixup 0 --cutmix 0"),
    (["--epochs", "0"], "--epochs 0: must be at least 1"),
    (["--epochs", "1", "--warmup-epochs", "2"], "--warmup-epochs 2.0 is not shorter than --epochs 1: the learning "
                                                "rate would never reach its cosine; use a warmup below 1 epochs"),
    (["--freeze", "conv1,layer9"], "--freeze conv1,layer9: cannot freeze layer9: not a module of ResNet. "
                                   "Top-level modules: conv1, bn1, act1, maxpool, layer1, layer2, layer3, layer4, "
                                   "global_pool, fc"),
    (["--opt", "adamx"], "--opt adamx: not a timm optimizer (e.g. adamw, sgd, lamb; timm.optim.list_optimizers() "
                         "lists them)"),
    (["--resume", "nowhere"], "nowhere is not a checkpoint (no progress.json); checkpoints are the update-* "
                              "folders under OUTPUT_DIR-checkpoints"),
    (["--batchsize", "8"], "unrecognized arguments: --batchsize 8 (did you mean --batch-size?) "
                           "(`train.py --help` lists the flags)"),
])
def test_train_refuses_what_cannot_work_in_one_line_before_any_work(flags, message, image_folder, tmp_path):
    out = tmp_path / "out"
    result = run_script("train.py", "--dataset", str(image_folder), "--output-dir", str(out), *flags)
    assert one_line_error(result) == message
    assert not out.exists()  # a failed start leaves nothing behind
    assert "Downloading data" not in result.stderr and "checking train images" not in result.stderr  # no data load


def test_a_mistyped_hub_dataset_is_one_line_naming_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with HubServer(token="hf_x") as hub:
        result = run_script("train.py", "--dataset", "ethz/food102", "--output-dir", str(tmp_path / "out"),
                            env=HUB_ENV | {"HF_ENDPOINT": hub.url}, timeout=120)
    assert one_line_error(result) == (
        f"--dataset ethz/food102: no such folder (in {ROOT}), and no such dataset on the Hub ({hub.url}); check "
        f"the spelling (Food-101 is ethz/food101), or pass a local image folder or --dataset demo")
    assert not (tmp_path / "out").exists()


def documented_commands(page: str, program: str) -> list[list[str]]:
    """The commands of a page's ```bash blocks (and tables' `code`) that start with `program`, as a user copies them:
    the part of a line after its last `&&` (the Quick start sets up first), without a trailing # comment."""
    text = (ROOT / page).read_text(encoding="utf-8")
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    lines += re.findall(r"^\| `([^`]+)`", text, re.M)
    commands = [shlex.split(line.split("&&")[-1].split("#")[0]) for line in lines]
    return [command for command in commands if command[:len(program.split())] == program.split()]


def test_the_readmes_training_commands_end_a_mistake_in_one_line_and_exit_status_2(tmp_path):
    """The Quick start's command and the own-photos one, as printed in README.md, with the issue's typo, and with
    the photo folder not there: one line each, exit status 2, before anything loads."""
    commands = documented_commands("README.md", "python train.py")
    assert [command[2:] for command in commands] == [["--config", "configs/demo.yaml"], ["--dataset", "my_food"],
                                                     ["--dataset", "my_food", "--no-pretrained", "--batch-size", "8"]]
    for command in commands:
        typo = run_script(*command[1:], "--image-szie", "64")
        assert one_line_error(typo) == ("unrecognized arguments: --image-szie 64 (did you mean --image-size?) "
                                        "(`train.py --help` lists the flags)")
    for command in commands[1:]:
        missing = run_script(str(ROOT / "train.py"), *command[2:], cwd=tmp_path)  # no my_food/ here
        assert one_line_error(missing) == f"--dataset my_food: no such folder (in {tmp_path})"


def test_accelerate_launch_as_training_md_documents_it(tmp_path):
    """accelerate's launcher keeps its exit status 1 for a failed script; with -q it adds nothing to our line."""
    command = next(c for c in documented_commands("docs/training.md", "accelerate launch -q") if "train.py" in c)
    assert command == ["accelerate", "launch", "-q", "--config_file", "accelerate_config.yaml", "train.py", "..."]
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    result = subprocess.run([accelerate, *command[1:-1], "--image-szie", "64"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "error: unrecognized arguments: --image-szie 64 (did you mean --image-size?) (`train.py --help` lists the "
        "flags)"]


HEAVY = ("torch", "timm", "datasets", "huggingface_hub", "gradio")


def heavy_imports(result: subprocess.CompletedProcess) -> set[str]:
    """The heavy libraries a command run with PYTHONPROFILEIMPORTTIME=1 imported (one stderr line per import)."""
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
            if line.startswith("import time:")} & set(HEAVY)


@pytest.mark.parametrize("command", [["push", "FOLDER", "YOUR_NAME/demo"], ["space", "YOUR_NAME/demo", "me/demo-app"],
                                     ["space", "FOLDER", "YOUR_NAME/demo-app"]])
def test_a_printed_push_pasted_unedited_asks_for_the_user_name_before_the_hub(command, tmp_path):
    """train.py prints `python -m food101hf.hub push OUT YOUR_NAME/NAME`: run unedited, it says what to replace
    instead of asking the Hub for a token or a user that is not there."""
    argv = [str(tmp_path) if word == "FOLDER" else word for word in command]
    result = run_script("-m", "food101hf.hub", *argv, env={"HF_TOKEN": "hf_x"})
    name = next(word for word in argv if word.startswith("YOUR_NAME/"))
    assert (result.returncode, result.stderr) == (2, f"error: {name}: replace YOUR_NAME with your Hub user or "
                                                     f"organisation name (`hf auth whoami` prints yours)\n")


@pytest.mark.parametrize("command, message", [
    (["train.py", "--dataset", "./my_fod"], "--dataset ./my_fod: no such folder (in {cwd}); did you mean ./my_food?"),
    (["train.py", "--dataset", "my_fod"], "--dataset my_fod: no such folder (in {cwd}); did you mean my_food?"),
    (["train.py", "--dataset", "~/no-such-food101hf-folder"], "--dataset ~/no-such-food101hf-folder: no such folder"),
    (["train.py", "--dataset", "photos/2024/my_food"], "--dataset photos/2024/my_food: no such folder (in {cwd})"),
    (["train.py", "--dataset", "notes.txt"], "--dataset notes.txt: a file, not a folder"),
    (["polish.py", "--init", "outputs/nonexistent"], "--init outputs/nonexistent: no such folder (in {cwd})"),
    (["-m", "food101hf.predict", "--model", "outputs/nonexistent", "dish.jpg"],
     "--model outputs/nonexistent: no such folder (in {cwd})"),
    (["-m", "food101hf.predict", "--model", "outputs/dmeo", "dish.jpg"],
     "--model outputs/dmeo: no such folder (in {cwd}); did you mean outputs/demo?"),
    (["-m", "food101hf.predict", "--model", "outputs/demo", "dish.jpg", "dsh.jpg"],
     "dsh.jpg: no such file or folder (in {cwd}); did you mean dish.jpg?"),
    (["-m", "food101hf.app", "--model", "outputs/nonexistent"],
     "--model outputs/nonexistent: no such folder (in {cwd})"),
    (["-m", "food101hf.report", "--dataset", "./my_fod", "--audit"],
     "--dataset ./my_fod: no such folder (in {cwd}); did you mean ./my_food?"),
    (["-m", "food101hf.hub", "space", "outputs/nonexistent", "me/space"],
     "outputs/nonexistent: no such folder (in {cwd})"),
    (["-m", "food101hf.hub", "push", "outputs/dem", "me/demo"],
     "outputs/dem: no such folder (in {cwd}); did you mean outputs/demo?"),
])
def test_a_path_that_does_not_exist_is_said_so_before_the_hub_or_torch(command, message, tmp_path):
    """A reference with a separator, a leading '.' or '~', or an existing parent (outputs/ here; the working
    directory for a bare name) is a path: missing, it is said to be missing, in one line, before any heavy import
    or Hub request, even with the Hub reachable."""
    (tmp_path / "my_food").mkdir()
    (tmp_path / "outputs" / "demo").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("not a dataset")
    (tmp_path / "dish.jpg").write_bytes(b"")
    script = [str(ROOT / command[0]), *command[1:]] if command[0].endswith(".py") else command
    with HubServer(token="hf_x") as hub:
        result = run_script(*script, cwd=tmp_path, timeout=120,
                            env=HUB_ENV | {"HF_ENDPOINT": hub.url, "PYTHONPROFILEIMPORTTIME": "1"})
    assert one_line_error(result) == message.format(cwd=tmp_path)
    assert hub.requests == [] and heavy_imports(result) == set()


def test_a_hub_id_is_still_looked_for_on_the_hub_and_an_unknown_one_said_so(tmp_path):
    with HubServer(token="hf_x") as hub:
        result = run_script("-m", "food101hf.predict", "--model", "me/no-such-model", str(ROOT / "README.md"),
                            cwd=tmp_path, env=HUB_ENV | {"HF_ENDPOINT": hub.url})
    assert one_line_error(result) == (
        f"me/no-such-model: no such folder (in {tmp_path}), and no Hub repo me/no-such-model at {hub.url} (or it is "
        f"private and HF_TOKEN cannot see it); pass a local folder written by train.py or polish.py")
    assert hub.requests


@pytest.mark.parametrize("command, message", [
    (["polish.py"], "--init is required: a folder written by train.py or polish.py, or a Hub repo id (org/name)"),
    (["polish.py", "--init", "x", "--model", "resnet50"],
     "--model: polish.py takes it from the model it starts from (--init)"),
    (["-m", "food101hf.report", "--dataset", "demo", "--tta", "--top-k", "3"],
     "unrecognized arguments: --top-k 3 (`python -m food101hf.report --help` lists the flags)"),
    (["-m", "food101hf.report", "--dataset", "demo", "--model", "/no/such/model", "--output-dir", "R"],
     "--model /no/such/model: no such folder"),
    (["-m", "food101hf.predict", "photo.jpg"],
     "the following arguments are required: --model (`python -m food101hf.predict --help` lists the flags)"),
    (["-m", "food101hf.predict", "--model", "m", "--precision", "fp8", "photo.jpg"],
     "argument --precision: invalid choice: 'fp8' (choose from 'auto', 'fp32', 'bf16', 'fp16') "
     "(`python -m food101hf.predict --help` lists the flags)"),
    (["-m", "food101hf.hub", "push", str(ROOT / "docs"), "org/name"],
     f"{ROOT / 'docs'} has no model.safetensors: push a folder written by train.py or polish.py"),
    # a count that cannot work: refused before torch loads (it printed nothing and exited 0, "all answered")
    *[(["-m", "food101hf.predict", "--model", "m", flag, value, "photo.jpg"],
       f"argument {flag}: must be a positive integer, got '{value}' (`python -m food101hf.predict --help` lists "
       f"the flags)") for flag, value in [("--batch-size", "0"), ("--batch-size", "-2"), ("--top-k", "0"),
                                          ("--batch-size", "2.5")]],
    (["-m", "food101hf.report", "--dataset", "demo", "--batch-size", "0"],
     "argument --batch-size: must be a positive integer, got '0' (`python -m food101hf.report --help` lists the "
     "flags)"),
    # a device that is not a device name, or not on this machine: said before the model loads (were tracebacks)
    (["-m", "food101hf.predict", "--model", "org/m", "--device", "gpu", "README.md"],
     "device 'gpu' is not a torch device name (e.g. cpu, cuda, cuda:1, mps); devices here: cpu"),
    (["-m", "food101hf.predict", "--model", "org/m", "--device", "cuda:99", "README.md"],
     "device 'cuda:99' is not present on this machine; devices here: cpu"),
    (["-m", "food101hf.predict", "--model", "org/m", "--device", "cuda", "README.md"],
     "device 'cuda' is not present on this machine; devices here: cpu"),
])
def test_every_entry_point_ends_a_flag_error_in_one_line(command, message, tmp_path):
    if "--device" in command and torch.accelerator.is_available():
        pytest.skip("the devices listed are this machine's: the expected messages are a CPU-only machine's")
    assert one_line_error(run_script(*command, "--output-dir", str(tmp_path / "out"))
                          if command[0] == "polish.py" else run_script(*command)) == message
    assert not (tmp_path / "out").exists()


def console_script(name: str) -> str:
    """What pip's generated `name` script runs, from setup.cfg's console_scripts: 'module:function'."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    scripts = dict(line.split(" = ") for line in config["options.entry_points"]["console_scripts"].split("\n") if line)
    return scripts[name]


@pytest.mark.parametrize("command", [["train.py"], ["polish.py"], ["-m", "food101hf.report"],
                                     ["-m", "food101hf.predict"], ["-m", "food101hf.hub"], ["-m", "food101hf.app"],
                                     ["-m", "food101hf.demo"], ["food101hf-predict"]])
def test_help_parses_before_torch_and_lists_each_flag_once_with_its_default(command):
    """Each entry point answers --help without the libraries that take seconds to import (torch, timm, datasets,
    huggingface_hub, gradio; numpy and psutil too), so it answers in well under a second."""
    if command[0] == "food101hf-predict":  # as pip's script: import the module, call the function
        module, function = console_script(command[0]).split(":")
        run = f"import importlib; importlib.import_module({module!r}).{function}()"
    else:
        target, how = (command[0], "run_path") if command[0] != "-m" else (command[1], "run_module")
        run = f"import runpy; runpy.{how}({target!r}, run_name='__main__')"
    probe = (f"import sys; sys.argv = [{command[-1]!r}, '--help']\n"
             f"try:\n    {run}\n"
             "except SystemExit as e:\n    assert e.code == 0\n"
             f"print('heavy:', sorted(m for m in {HEAVY + ('numpy', 'psutil')!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("heavy: []")
    text = result.stdout
    assert "\n    " in text.split("options:")[0]  # the description's example commands keep their own lines
    for line in text.splitlines():
        assert line.count("(default:") <= 1, line


def test_required_flags_come_first_and_predict_documents_its_output():
    train = run_script("train.py", "--help").stdout
    assert "(default: ethz/food101)" in train and "(default: None)" not in train
    assert "--pretrained, --no-pretrained" in train and "(default: --pretrained)" in train
    polish = run_script("polish.py", "--help").stdout
    assert polish.startswith("usage: polish.py --init INIT [--config FILE.yaml] [options]")
    assert polish.index("required:\n  --init") < polish.index("options:")
    assert "--model" not in polish and "--pretrained" not in polish and "--drop-rate" not in polish
    predict = run_script("-m", "food101hf.predict", "--help").stdout
    assert '{"file": "dish.jpg", "predictions": [{"label": "ramen", "score": 0.93}, ...]}' in predict
    assert "exit status:\n  0  every image answered\n  1  some inputs could not be read" in predict


@pytest.mark.slow
@pytest.mark.parametrize("case", ["while rank 1 waits for rank 0's data", "met by both ranks"])
def test_under_torchrun_a_data_error_is_one_line_and_the_other_rank_adds_no_traceback(case, tmp_path, image_folder):
    if case.startswith("while"):
        (image_folder / "train" / "empty class").mkdir()
        flags, message = ["--batch-size", "4"], f"{image_folder / 'train' / 'empty class'}/ has no images"
    else:
        flags, message = ["--batch-size", "64"], ("24 training images are fewer than one batch of 64: lower "
                                                  "--batch-size (e.g. --batch-size 8: 3 batches an epoch)")
    out = tmp_path / "out"
    result = run_script("-m", "torch.distributed.run", "--nproc_per_node", "2", "train.py", "--dataset",
                        str(image_folder), "--no-pretrained", "--epochs", "1", "--num-workers", "0", *flags,
                        "--output-dir", str(out), timeout=240)
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if line.startswith("error: ")] == [f"error: {message}"]
    assert "[rank1]" not in result.stderr and "closed by peer" not in result.stderr  # no gloo traceback
    assert "exitcode: 2) local_rank: 0" in result.stderr  # torchrun's own summary: rank 0 exited with status 2
    assert not out.exists()


@pytest.mark.slow
def test_a_failed_model_start_leaves_no_config_behind(image_folder, tmp_path):
    out = tmp_path / "out"
    result = run_script("train.py", "--dataset", str(image_folder), "--output-dir", str(out), "--pretrained",
                        "--epochs", "1", "--batch-size", "4", "--num-workers", "0", timeout=120)
    assert "cannot be used" in one_line_error(result) or "cannot reach the Hub" in one_line_error(result)
    assert not out.exists()


def test_next_steps_say_what_was_made_and_that_the_demo_is_synthetic(tmp_path, monkeypatch):
    from food101hf.runs import next_steps
    from food101hf.config import PolishConfig, TrainConfig

    monkeypatch.setattr(sys, "argv", ["train.py", "--config", "configs/demo.yaml"])  # as the README starts it

    out = tmp_path / "demo run"
    text = next_steps(out, TrainConfig(dataset="demo", image_size=64, batch_size=32, num_workers=1),
                      str(tmp_path / "v" / "crème brûlée" / "1.jpg"))
    assert f"python -m food101hf.predict --model '{out}' '{tmp_path}/v/crème brûlée/1.jpg'" in text  # pastes as is
    # as this process was started (python), at 64 x 224/192 -> 80 px, with the run's batch size (polish's is 128)
    assert f"python polish.py --init '{out}' --batch-size 32   # FixRes: fine-tune briefly at 80 px (64 px x " \
           f"224/192) into {out}-80" in text
    assert "report/report.md" in text and "metrics.json" in text and "Warning" not in text
    assert "Note: the demo dataset is synthetic" in text
    polished = next_steps(out, PolishConfig(init="x", dataset="ethz/food101", push_to_hub="me/m", report=False), None)
    assert f"python -m food101hf.predict --model '{out}' YOUR_PHOTO.jpg" in polished
    assert "polish.py" not in polished and "hub push" not in polished and "report/" not in polished
    assert "synthetic" not in polished


def _entry_point(failure: Exception):
    def main(argv=None) -> int:
        raise failure
    return main


def test_a_users_mistake_is_one_line_and_a_bug_keeps_its_traceback(capsys):
    from food101hf.cli import USAGE_ERROR, run
    from food101hf.errors import DatasetError, ImageError, ModelNotFoundError, StorageError

    for mistake in (DatasetError("my_food/: no such folder"), ImageError("a.jpg: cannot be read"),
                    StorageError("not enough space"), ModelNotFoundError("outputs/x: no such folder")):
        with pytest.raises(SystemExit) as exit_:
            run(_entry_point(mistake))
        assert exit_.value.code == USAGE_ERROR
        assert capsys.readouterr().err == f"error: {mistake}\n"
    # a ValueError (or FileNotFoundError) of our code, numpy, torch or datasets is a bug: it propagates, so the
    # interpreter prints its traceback and exits 1
    for bug in (ValueError("invalid literal for int()"), FileNotFoundError("/tmp/x"), KeyError("label")):
        with pytest.raises(type(bug)):
            run(_entry_point(bug))
        assert capsys.readouterr().err == ""


def test_a_bug_in_a_real_command_shows_its_traceback(tmp_path):
    """Through a real interpreter: the bug's traceback and exit status 1, not a one-line `error:`."""
    script = tmp_path / "entry.py"
    script.write_text("from food101hf.cli import run\n\ndef main(argv=None):\n    return int('two')\n\nrun(main)\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: invalid literal for int()" in result.stderr
    assert "error: " not in result.stderr


def test_the_hub_clients_request_log_is_muted():
    """huggingface_hub 2.4 sends its requests through httpx2, which logs each one at INFO, as httpx did."""
    import logging

    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    from food101hf.cli import setup_logging

    setup_logging()
    heard = []
    handler = logging.Handler()
    handler.emit = heard.append
    logging.getLogger("httpx2").addHandler(handler)
    try:
        with HubServer(token="hf_x") as hub, pytest.raises(RepositoryNotFoundError):
            HfApi(endpoint=hub.url, token=False).model_info("food/none")
    finally:
        logging.getLogger("httpx2").removeHandler(handler)
    assert [record.getMessage() for record in heard if record.levelno < logging.WARNING] == []
