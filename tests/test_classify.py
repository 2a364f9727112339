"""Saved classifiers on the tiny 4-bit model: round trips for both methods, the command line, each error.

One module fixture builds both classifiers (LoRA with random B matrices, so the adapter changes the
scores), records what the in-memory models score, saves them and frees the models: every test then
loads at most one base model, as ``LMCLS_ONE_MODEL=1`` (``make test``) requires.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from lmcls_helpers import classify, models
from lmcls_helpers.classify import METADATA, load_classifier, main, save_classifier
from lmcls_helpers.data import load_cola
from lmcls_helpers.heads import HEAD_MODULE, add_linear_head, head_logits
from lmcls_helpers.profiles import get_profile
from lmcls_helpers.prompts import PromptTemplate
from lmcls_helpers.scoring import evaluate
from lmcls_helpers.tokens import load_tokenizer

HEAD_CLASSES = ("unacceptable", "acceptable")


def lora(model, head: bool = False):
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        modules_to_save=[HEAD_MODULE] if head else None)
    peft_model = get_peft_model(model, config)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero: make the adapter matter
            torch.nn.init.normal_(p, std=0.5)
    return peft_model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    profile = get_profile("tiny")
    dev = load_cola(profile.cola_root)["in_domain_dev"].iloc[:6]
    sentences, labels = list(dev.sentence), list(dev.label)
    tokenizer = load_tokenizer(profile, padding_side="left")  # the classifier pads on the right: sides must not matter
    template = PromptTemplate(tokenizer=tokenizer, label_words=profile.label_words)
    root = tmp_path_factory.mktemp("classifiers")
    models.free_gpu_memory()

    words = lora(models.load_model(profile))
    result = evaluate(words, tokenizer, sentences, labels, template, template.label_ids, batch_size=4)
    with words.disable_adapter():
        base = evaluate(words, tokenizer, sentences, labels, template, template.label_ids, batch_size=4)
    save_classifier(root / "words", words, profile, template)
    del words
    models.free_gpu_memory()

    head = lora(add_linear_head(models.load_model(profile), seed=0), head=True)
    with torch.no_grad():
        head.base_model.model.lm_head.modules_to_save["default"].bias.fill_(0.3)  # a head unlike any fresh draw
        batch = tokenizer([template.format(s) for s in sentences], return_tensors="pt", padding=True)
        head_p1 = torch.sigmoid(head_logits(head, batch)).numpy()
    save_classifier(root / "head", head, profile, template, class_names=HEAD_CLASSES)
    del head
    models.free_gpu_memory()
    return {"root": root, "sentences": sentences, "profile": profile, "result": result, "base": base, "head_p1": head_p1}


def test_label_words_round_trip_gives_evaluate_softmax(saved):
    expected = torch.softmax(torch.from_numpy(saved["result"].scores).float(), dim=1).numpy()
    assert np.abs(expected[:, 1] - saved["base"].probs).max() > 1e-3, "the adapter must change the scores"
    classifier = load_classifier(saved["root"] / "words", batch_size=4)
    probs = classifier.predict_proba(saved["sentences"])
    assert probs.shape == (6, 2) and classifier.class_names == ("unacceptable", "acceptable")
    np.testing.assert_allclose(probs, expected, **saved["profile"].tolerance)
    np.testing.assert_allclose(probs[:, 1], saved["result"].probs, **saved["profile"].tolerance)
    assert classifier.predict(saved["sentences"]) == [classifier.class_names[k] for k in saved["result"].preds]
    for bad in ("", "   "):
        with pytest.raises(ValueError, match="no sentence to classify"):
            classifier.predict_proba(["A fine sentence.", bad])
    with pytest.raises(TypeError, match=r"\[text\]"):
        classifier.predict("A fine sentence.")
    del classifier
    models.free_gpu_memory()


def test_linear_head_round_trip_gives_the_head_sigmoid(saved):
    classifier = load_classifier(saved["root"] / "head")  # draws a fresh head from profile.seed; the saved one replaces it
    probs = classifier.predict_proba(saved["sentences"])
    np.testing.assert_allclose(probs[:, 1], saved["head_p1"], **saved["profile"].tolerance)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert classifier.predict(saved["sentences"]) == [HEAD_CLASSES[int(p > 0.5)] for p in saved["head_p1"]]
    del classifier
    models.free_gpu_memory()


def test_metadata_is_readable_json(saved):
    words = json.loads((saved["root"] / "words" / METADATA).read_text())
    assert words["method"] == "label_words" and words["label_words"] == [" unacceptable", " acceptable"]
    assert words["class_names"] == ["unacceptable", "acceptable"] and words["template"] == PromptTemplate().text
    assert words["base_model"] == "build/tiny/model" and words["profile"] == "tiny" and words["lmcls_version"]
    head = json.loads((saved["root"] / "head" / METADATA).read_text())
    assert head["method"] == "linear_head" and head["label_words"] is None and head["class_names"] == list(HEAD_CLASSES)
    assert (saved["root"] / "head" / METADATA).read_text().count("\n") > 5, "indented, one field a line"


def test_command_line_prints_label_tab_probability(saved, tmp_path, capsys):
    texts = saved["sentences"][:3]
    (tmp_path / "texts.txt").write_text("\n".join(texts[1:]) + "\n")
    assert main([str(saved["root"] / "words"), texts[0], "--file", str(tmp_path / "texts.txt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = torch.softmax(torch.from_numpy(saved["result"].scores[:3]).float(), dim=1).numpy()
    assert len(lines) == 3
    for line, row in zip(lines, expected):
        label, prob = line.split("\t")
        assert label == ("unacceptable", "acceptable")[row.argmax()]
        assert abs(float(prob) - row.max()) < 1e-4 and len(prob) == 6  # four decimals
    models.free_gpu_memory()


@pytest.mark.parametrize(("args", "message"), [
    (["TEXT", ""], "no sentence to classify"),
    ([], "nothing to classify"),
    (["--file", "no/such/file.txt"], "no such file"),
    (["TEXT", "--batch-size", "-1"], "batch_size must be at least 1"),
    (["TEXT", "--batch-size", "0"], "batch_size must be at least 1"),
])
def test_command_line_errors_exit_2_without_loading(saved, capsys, args, message):
    loads = models.load_count()
    with pytest.raises(SystemExit) as exit_info:
        main([str(saved["root"] / "words"), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert models.load_count() == loads


def test_missing_files_are_named(saved, tmp_path):
    with pytest.raises(ValueError, match="has no classifier.json.*save_classifier"):
        load_classifier(tmp_path)
    copy = shutil.copytree(saved["root"] / "words", tmp_path / "words")
    (copy / "adapter_model.safetensors").unlink()
    with pytest.raises(ValueError, match="lacks adapter_model.safetensors: copy the whole folder"):
        load_classifier(copy)


def test_a_folder_from_another_base_model_is_refused(saved, tmp_path):
    copy = shutil.copytree(saved["root"] / "words", tmp_path / "words")
    meta = json.loads((copy / METADATA).read_text())
    meta["base_model"] = "meta-llama/Meta-Llama-3-8B"
    (copy / METADATA).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="trained on 'meta-llama/Meta-Llama-3-8B'.*get_profile"):
        load_classifier(copy)
    other = saved["profile"].with_(model_id="meta-llama/Meta-Llama-3-8B")
    with pytest.raises(ValueError, match="trained on 'build/tiny/model'"):
        load_classifier(saved["root"] / "words", profile=other)


def test_base_model_id_is_relative_to_build_and_marks_random_weights(saved):
    assert classify.base_model_id(saved["profile"]) == "build/tiny/model"
    assert classify.base_model_id(saved["profile"].with_(model_config={"x": 1})).endswith("(random weights)")


def test_save_refuses_what_it_cannot_reload(saved, tmp_path):
    profile = saved["profile"]
    base = models.load_model(profile)
    with pytest.raises(ValueError, match="get_peft_model"):
        save_classifier(tmp_path / "plain", base, profile)
    with pytest.raises(ValueError, match="profile the model was loaded with"):
        save_classifier(tmp_path / "x", lora(base), profile.with_(model_id="meta-llama/Meta-Llama-3-8B"))
    del base
    models.free_gpu_memory()
    no_head = lora(add_linear_head(models.load_model(profile), seed=0), head=False)  # the head not in modules_to_save
    with pytest.raises(ValueError, match="class_names"):
        save_classifier(tmp_path / "h", no_head, profile)
    with pytest.raises(ValueError, match="saved without its head"):
        save_classifier(tmp_path / "h", no_head, profile, class_names=HEAD_CLASSES)
    assert not (tmp_path / "h" / METADATA).exists()
    del no_head
    models.free_gpu_memory()


def test_a_corrupt_metadata_file_names_the_fix(tmp_path):
    whole = '"class_names": ["no", "yes"], "template": "t", "base_model": "m", "profile": "tiny"'
    no_words = '{"method": "label_words", ' + whole + "}"  # a label-word classifier without its label words
    for text in ("{not json", "[]", '{"method": "label_words"}', no_words, no_words.replace('["no", "yes"]', "null")):
        (tmp_path / METADATA).write_text(text)
        with pytest.raises(ValueError, match="corrupt or incomplete.*save_classifier"):
            classify.read_metadata(tmp_path)


# --- a saved classifier needs only its folder and its base model -------------------------------------------------
@pytest.fixture()
def elsewhere(saved, tmp_path, monkeypatch):
    """The words classifier re-labelled as saved on another profile, whose LMCLS_MODEL is a copy of the tiny model."""
    model_dir = shutil.copytree(saved["profile"].model_id, tmp_path / "model")
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the small and full profiles read the tokenizer there
        shutil.copy(f"{saved['profile'].tokenizer_id}/{name}", model_dir / name)
    monkeypatch.setenv("LMCLS_MODEL", str(model_dir))
    monkeypatch.delenv("LMCLS_COLA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./cola_public either
    monkeypatch.setattr("lmcls_helpers.profiles._cola_reachable", lambda timeout=5.0: False)  # and no network
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = shutil.copytree(saved["root"] / "words", tmp_path / "words")

    def relabel(profile: str):
        meta = json.loads((folder / METADATA).read_text())
        (folder / METADATA).write_text(json.dumps({**meta, "profile": profile, "base_model": str(model_dir)}))
        return folder

    return relabel


@pytest.mark.parametrize("name", ["small", "full"])
def test_a_classifier_loads_without_the_corpus_and_without_a_gpu(saved, elsewhere, capsys, name):
    from lmcls_helpers.profiles import get_profile

    with pytest.raises(RuntimeError, match="real CoLA corpus" if name == "small" else "needs a CUDA GPU"):
        get_profile(name)  # what training on this profile needs, and this machine lacks
    classifier = load_classifier(elsewhere(name), batch_size=4)
    expected = torch.softmax(torch.from_numpy(saved["result"].scores).float(), dim=1).numpy()
    np.testing.assert_allclose(classifier.predict_proba(saved["sentences"]), expected, **saved["profile"].tolerance)
    assert ("No GPU visible: loading the 'full' classifier on the CPU" in capsys.readouterr().err) == (name == "full")
    del classifier
    models.free_gpu_memory()


def test_a_missing_model_folder_is_named_not_sent_to_the_hub(monkeypatch, saved, capsys):
    from lmcls_helpers.profiles import get_profile

    for missing in ("/no/such/model", "./models/mine", "~/models/llama", "a/b/c"):
        monkeypatch.setenv("LMCLS_MODEL", missing)
        with pytest.raises(ValueError, match=r"LMCLS_MODEL=.* names no folder here.*config\.json.*unset it"):
            get_profile("small", require_device=False)
    monkeypatch.setenv("LMCLS_MODEL", "HuggingFaceTB/SmolLM2-135M")  # a hub id stays a hub id
    assert get_profile("small", require_device=False).model_id == "HuggingFaceTB/SmolLM2-135M"
    monkeypatch.setenv("LMCLS_MODEL", "/no/such/model")  # the command line says it, not a traceback
    copy = saved["root"] / "small_copy"
    shutil.copytree(saved["root"] / "words", copy, dirs_exist_ok=True)
    meta = json.loads((copy / METADATA).read_text())
    (copy / METADATA).write_text(json.dumps({**meta, "profile": "small"}))
    with pytest.raises(SystemExit) as exit_info:
        main([str(copy), "A sentence."])
    assert exit_info.value.code == 2 and "LMCLS_MODEL=/no/such/model names no folder here" in capsys.readouterr().err


def test_command_line_names_the_corrupt_file_and_the_fix(saved, tmp_path, capsys):
    copy = shutil.copytree(saved["root"] / "words", tmp_path / "words")
    (copy / METADATA).write_text('{"method": "label_words", "class_names": ["a", "b"')  # cut short by a bad copy
    loads = models.load_count()
    with pytest.raises(SystemExit) as exit_info:
        main([str(copy), "A sentence."])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"{copy / METADATA} is corrupt or incomplete" in err and "save_classifier" in err
    assert "Expecting" not in err and models.load_count() == loads  # no bare parser message, no model loaded


def test_command_line_skips_blank_lines_of_a_file(saved, tmp_path, capsys):
    texts = saved["sentences"][:3]
    (tmp_path / "texts.txt").write_text(f"\n{texts[0]}\n\n   \n{texts[1]}\n{texts[2]}\n\n")
    assert main([str(saved["root"] / "words"), "--file", str(tmp_path / "texts.txt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = torch.softmax(torch.from_numpy(saved["result"].scores[:3]).float(), dim=1).numpy()
    assert [float(line.split("\t")[1]) for line in lines] == pytest.approx(expected.max(axis=1), abs=1e-4)
    models.free_gpu_memory()


def test_a_text_longer_than_the_context_is_refused(saved, capsys):
    classifier = load_classifier(saved["root"] / "words", batch_size=4)
    context = classifier.model.get_base_model().config.max_position_embeddings
    long_text = " ".join(["The cat sat on the mat."] * 1000)  # 6,000 words
    with pytest.raises(ValueError, match=rf"Text 1 .* more than the {context:,} the model can read.*split it"):
        classifier.predict_proba([saved["sentences"][0], long_text])
    fits = " ".join(saved["sentences"][0].split()[:5])
    assert classifier.predict_proba([fits]).shape == (1, 2)
    del classifier
    models.free_gpu_memory()
    with pytest.raises(SystemExit) as exit_info:
        main([str(saved["root"] / "words"), long_text])
    assert exit_info.value.code == 2 and "more than the" in capsys.readouterr().err
    models.free_gpu_memory()


def test_a_file_that_is_not_utf8_is_named_not_a_traceback(saved, tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9 au lait.\n".encode("latin-1"))
    with pytest.raises(SystemExit) as exit_info:
        main([str(saved["root"] / "words"), "--file", str(tmp_path / "latin1.txt")])
    assert exit_info.value.code == 2 and "cannot read it as UTF-8 text" in capsys.readouterr().err


def test_a_missing_base_model_folder_says_how_to_build_it(saved, tmp_path):
    copy = shutil.copytree(saved["root"] / "words", tmp_path / "words")
    meta = json.loads((copy / METADATA).read_text())
    meta["base_model"] = "build/tiny/no-such-model"
    (copy / METADATA).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="build/tiny/no-such-model is missing: build it first"):
        load_classifier(copy)
