import json

import pytest

from potstill.cli import main


def test_list_json_names_catalog_ids_and_papers(capsys):
    assert main(["list", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    by_name = {m["name"]: m for m in info["methods"]}
    assert by_name["kd"]["catalog_ids"] == ["B1"] and by_name["kd"]["arxiv"] == "1503.02531"
    assert by_name["label_free"]["catalog_ids"] == ["K7"] and by_name["label_free"]["arxiv"] == "2103.05959"
    assert "convnet" in info["models"] and "fmnist" in info["datasets"]


def test_list_config_and_layers(capsys):
    assert main(["list", "--config", "kd"]) == 0
    assert "temperature" in capsys.readouterr().out
    assert main(["list", "--layers", "convnet"]) == 0
    assert "features.4" in capsys.readouterr().out


@pytest.mark.parametrize("cmd", [[], ["list"], ["run"], ["demo"]])
def test_help_explains_with_examples(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: potstill" in out and (not cmd or "examples:" in out)


def test_bad_override_fails_before_writing_anything(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: {name: supervised}\ndata: {name: digits}\nstudent: {name: mlp}\n")
    assert main(["run", str(recipe), "trainer.lr=0.1", "--out", str(tmp_path / "out")]) == 2
    assert "unknown key 'trainer.lr'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # a missing teacher checkpoint is also caught before the folder is made
    recipe.write_text("method: {name: kd}\ndata: {name: digits}\nstudent: {name: mlp}\n"
                      "teacher: {model: {name: mlp}, checkpoint: nowhere.safetensors}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 2
    assert "teacher.checkpoint: weights file not found: nowhere.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_overrides_after_options_are_taken(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: {name: supervised}\ndata: {name: digits}\nstudent: {name: mlp}\n")
    # after --out, a bad override is still read (and refused by name), not an argparse error
    assert main(["run", str(recipe), "--out", str(tmp_path / "out"), "trainer.lr=0.1"]) == 2
    assert "unknown key 'trainer.lr'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):                  # an unknown option is still an error
        main(["run", str(recipe), "--out", str(tmp_path / "out"), "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
