"""What is a Hub repo id and what a local path: a reference that can only be a path is never looked for on the Hub."""

import pytest

from food101hf.hub_access import has_repo_id_form, is_repo_id, looks_like_path, missing_folder, no_such_path


@pytest.mark.parametrize("ref, repo", [
    ("ethz/food101", True), ("timm/resnet18.a1_in1k", True), ("org/name@main", True),
    ("outputs/nope", False),  # outputs/ is a folder here: a path
    ("my_food", False), ("./my_food", False), ("../x/y", False), ("~/food", False), ("/data/food", False),
    ("photos/2024/food", False), ("org\\name", False), (".hidden/name", False),
])
def test_a_reference_is_a_hub_id_only_when_it_can_be_no_local_path(ref, repo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    assert is_repo_id(ref) is repo and looks_like_path(ref) is not repo
    assert not is_repo_id("org/name@") and not looks_like_path("org/name@")  # neither: refused as not a repo id


def test_a_push_target_needs_only_the_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "me").mkdir()  # a folder named like the user's namespace does not make me/model a path to push to
    assert has_repo_id_form("me/model") and not is_repo_id("me/model")
    assert not has_repo_id_form("me/model/x") and not has_repo_id_form("model")


def test_a_missing_folder_is_named_with_the_closest_names_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs" / "demo").mkdir(parents=True)
    (tmp_path / "outputs" / "demo-80").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert no_such_path("outputs/dem") == f"outputs/dem: no such folder (in {tmp_path}); did you mean outputs/demo " \
                                          f"or outputs/demo-80?"
    assert no_such_path(tmp_path / "nothing-like-it") == f"{tmp_path / 'nothing-like-it'}: no such folder"
    assert no_such_path("notes.txt") == "notes.txt: a file, not a folder"
    assert no_such_path("nowhere/at/all") == f"nowhere/at/all: no such folder (in {tmp_path})"
    assert missing_folder("outputs/demo") is None and missing_folder("ethz/food101") is None
    assert missing_folder("outputs/x") == f"outputs/x: no such folder (in {tmp_path})"
