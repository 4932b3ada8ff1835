"""ALBERT sharing modes: parameter counts, factorised embeddings, and ties that survive save + reload."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors import safe_open
from transformers import (
    AlbertConfig,
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from plmkit.models.albert import SharedAlbertConfig, albert_config, count_parameters, register

V, E, H, L, HEADS, FFN, P = 100, 16, 32, 4, 2, 64, 64
MODES = ("all", "attention", "ffn", "none")
# the AlbertLayer submodules each mode shares, as the tests expect them
SHARED = {"all": (), "attention": ("attention",), "ffn": ("ffn", "ffn_output"), "none": ()}


def tiny_config(sharing: str, **overrides) -> AlbertConfig:
    config = albert_config(
        vocab_size=V,
        embedding_size=E,
        hidden_size=H,
        num_layers=L,
        num_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=P,
        pad_token_id=0,
        sharing=sharing,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def build(sharing: str, auto_class=AutoModelForPreTraining, **overrides):
    torch.manual_seed(0)
    return auto_class.from_config(tiny_config(sharing, **overrides)).eval()


def expected_encoder_parameters(sharing: str) -> int:
    """AlbertModel (with pooler) parameters, from the shapes."""
    linear = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731
    embeddings = V * E + P * E + 2 * E + 2 * E  # word, position, token type, LayerNorm
    mapping = linear(E, H)
    attention = 4 * linear(H, H) + 2 * H  # q, k, v, dense, LayerNorm
    ffn = linear(H, FFN) + linear(FFN, H)
    layer_norm = 2 * H  # full_layer_layer_norm
    pooler = linear(H, H)
    encoder_layers = {
        "all": attention + ffn + layer_norm,
        "attention": attention + L * (ffn + layer_norm),
        "ffn": ffn + L * (attention + layer_norm),
        "none": L * (attention + ffn + layer_norm),
    }[sharing]
    return embeddings + mapping + encoder_layers + pooler


def layers(model) -> list[torch.nn.Module]:
    """The AlbertLayer of each layer group."""
    return [group.albert_layers[0] for group in model.base_model.encoder.albert_layer_groups]


def shared_pairs(model, sharing: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, layer 0's parameter, layer i's parameter) for every parameter the mode shares."""
    first, *rest = layers(model)
    pairs = []
    for block in SHARED[sharing]:
        for name, param in getattr(first, block).named_parameters():
            for other in rest:
                pairs.append((f"{block}.{name}", param, getattr(other, block).get_parameter(name)))
    return pairs


def assert_shared(model, sharing: str) -> None:
    pairs = shared_pairs(model, sharing)
    assert len(pairs) == (L - 1) * sum(1 for b in SHARED[sharing] for _ in getattr(layers(model)[0], b).parameters())
    for name, first, other in pairs:
        assert first is other and first.data_ptr() == other.data_ptr(), name


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, V, (2, 9), generator=generator)  # (B, T)
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 5:] = 1
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "token_type_ids": token_type_ids}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, tuple[object, Path]]:
    """mode -> (ForPreTraining model, the directory it was saved to)."""
    out = {}
    for sharing in MODES:
        model = build(sharing)
        path = tmp_path_factory.mktemp(f"albert-{sharing}")
        model.save_pretrained(path)
        out[sharing] = (model, path)
    return out


@pytest.mark.parametrize("sharing", MODES)
def test_parameter_count_matches_the_shapes(sharing):
    model = build(sharing, AutoModel)
    assert count_parameters(model) == expected_encoder_parameters(sharing)
    assert model.embeddings.word_embeddings.weight.shape == (V, E)
    mapping = model.encoder.embedding_hidden_mapping_in
    assert (mapping.in_features, mapping.out_features) == (E, H)
    assert len(model.encoder.albert_layer_groups) == (1 if sharing == "all" else L)
    assert_shared(model, sharing)


def test_parameter_counts_are_ordered():
    count = {sharing: count_parameters(build(sharing, AutoModel)) for sharing in MODES}
    assert count["none"] > count["ffn"] > count["all"]
    assert count["none"] > count["attention"] > count["all"]


def test_unknown_sharing_names_the_valid_modes():
    with pytest.raises(ValueError, match="all, attention, ffn, none"):
        tiny_config("embeddings")
    with pytest.raises(StrictDataclassClassValidationError, match="one layer group per layer"):
        SharedAlbertConfig(num_hidden_layers=4, num_hidden_groups=2)
    with pytest.raises(StrictDataclassClassValidationError, match="sharing must be one of"):
        SharedAlbertConfig(sharing="all")


def test_config_types():
    assert type(tiny_config("all")) is AlbertConfig and tiny_config("all").model_type == "albert"
    config = tiny_config("ffn")
    assert isinstance(config, SharedAlbertConfig) and config.model_type == "plmkit-albert"
    assert (config.num_hidden_groups, config.inner_group_num, config.sharing) == (L, 1, "ffn")


@pytest.mark.parametrize("sharing", MODES)
@pytest.mark.parametrize("auto_class", [AutoModelForPreTraining, AutoModel])
def test_reload_keeps_count_ties_and_outputs(saved, sharing, auto_class):
    before, path = saved[sharing]
    if auto_class is AutoModel:
        before = before.base_model
    after = auto_class.from_pretrained(path).eval()
    hf_name = "AlbertModel" if auto_class is AutoModel else "AlbertForPreTraining"
    assert type(after).__name__ == (hf_name if sharing == "all" else f"Shared{hf_name}")
    assert count_parameters(after) == count_parameters(before)
    assert_shared(after, sharing)
    with torch.no_grad():
        expected, got = before(**batch()), after(**batch())
    for key in ("prediction_logits", "sop_logits", "last_hidden_state", "pooler_output"):
        if key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def test_config_round_trip(saved):
    config = AutoConfig.from_pretrained(saved["attention"][1])
    assert isinstance(config, SharedAlbertConfig) and config.sharing == "attention"
    assert AutoConfig.from_pretrained(saved["all"][1]).model_type == "albert"  # loads with plain transformers


@pytest.mark.parametrize(
    ("sharing", "shared", "unshared"),
    [
        ("attention", "attention.query.weight", "ffn.weight"),
        ("ffn", "ffn.weight", "attention.query.weight"),
    ],
)
def test_optimizer_step_keeps_shared_parameters_one_tensor(saved, sharing, shared, unshared):
    model = AutoModelForPreTraining.from_pretrained(saved[sharing][1]).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first, second = layers(model)[:2]
    before = first.get_parameter(shared).clone()
    inputs = batch()
    out = model(**inputs, labels=inputs["input_ids"], sentence_order_label=torch.tensor([0, 1]))
    out.loss.backward()
    optimizer.step()
    assert_shared(model, sharing)
    assert not torch.equal(first.get_parameter(shared), before)  # the step moved it
    assert torch.equal(first.get_parameter(shared), second.get_parameter(shared))
    assert not torch.equal(first.get_parameter(unshared), second.get_parameter(unshared))
    assert not torch.equal(first.full_layer_layer_norm.weight, second.full_layer_layer_norm.weight)


@pytest.mark.parametrize("sharing", MODES)
def test_safetensors_holds_each_shared_tensor_once(saved, sharing):
    with safe_open(str(saved[sharing][1] / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    groups = range(1 if sharing == "all" else L)

    def key(group: int, suffix: str) -> str:
        return f"albert.encoder.albert_layer_groups.{group}.albert_layers.0.{suffix}"

    for suffix in (
        "attention.query.weight",
        "attention.LayerNorm.weight",
        "ffn.weight",
        "ffn_output.bias",
        "full_layer_layer_norm.weight",
    ):
        block = suffix.split(".")[0]
        present = {g for g in groups if key(g, suffix) in keys}
        assert present == ({0} if block in SHARED[sharing] else set(groups)), suffix
    assert "predictions.decoder.weight" not in keys  # tied to the word embeddings by transformers itself
    assert "albert.embeddings.word_embeddings.weight" in keys


@pytest.mark.parametrize("sharing", ["all", "attention"])
def test_sop_head_gives_a_finite_loss(sharing):
    model = build(sharing)
    inputs = batch()
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, 2] = inputs["input_ids"][:, 2]
    out = model(**inputs, labels=labels, sentence_order_label=torch.tensor([0, 1]))  # 0 original, 1 swapped
    assert out.sop_logits.shape == (2, 2) and out.prediction_logits.shape == (2, 9, V)
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("sharing", ["attention", "ffn"])
def test_fine_tune_heads_from_a_pretraining_checkpoint(saved, sharing):
    pretrained, path = saved[sharing]
    classifier = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    assert_shared(classifier, sharing)
    assert count_parameters(classifier.albert) == count_parameters(pretrained.albert)
    encoder = dict(pretrained.albert.named_parameters())
    for name, param in classifier.albert.named_parameters():
        torch.testing.assert_close(param, encoder[name], rtol=0, atol=0)
    with torch.no_grad():
        out = classifier(**batch(), output_hidden_states=True)
    assert out.logits.shape == (2, 2) and len(out.hidden_states) == L + 1
    for auto_class in (AutoModelForTokenClassification, AutoModelForMaskedLM):
        assert_shared(auto_class.from_pretrained(path, num_labels=3), sharing)


@pytest.mark.parametrize("sharing", MODES)
def test_hidden_states_of_every_layer(sharing):
    with torch.no_grad():
        out = build(sharing, AutoModel)(**batch(), output_hidden_states=True)
    assert len(out.hidden_states) == L + 1
    assert out.hidden_states[0].shape == out.hidden_states[-1].shape == (2, 9, H)


def test_save_and_reload_log_no_warnings(tmp_path, caplog):
    model = build("attention")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        model.save_pretrained(tmp_path)
        AutoModelForPreTraining.from_pretrained(tmp_path)
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.name.startswith("transformers")] == []


def test_sharing_does_not_depend_on_tied_word_embeddings(tmp_path):
    model = build("attention", tie_word_embeddings=False)
    assert_shared(model, "attention")
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert_shared(reloaded, "attention")
    assert count_parameters(reloaded) == count_parameters(model)


@pytest.mark.parametrize("sharing", ["attention", "ffn"])
@pytest.mark.parametrize("source", ["AutoModel", "albert of a head model"])
def test_encoder_saves_alone(saved, sharing, source, tmp_path):
    # a head model's `albert` is Hugging Face's AlbertModel class, with the ties declared on it too
    encoder = build(sharing, AutoModel) if source == "AutoModel" else saved[sharing][0].albert
    encoder.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded).__name__ == "SharedAlbertModel"
    assert_shared(reloaded, sharing)
    assert count_parameters(reloaded) == count_parameters(encoder)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch()).last_hidden_state, encoder(**batch()).last_hidden_state)


def test_register_is_idempotent():
    register()
    register()
    assert type(build("ffn", AutoModel)).__name__ == "SharedAlbertModel"
