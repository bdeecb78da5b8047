"""Token heads (issue 5): round trips of every head, masking, the wavelet bases, loss options, config checks.

The round trip reuses test_export's machinery: every head × {CRF off, on} × {top layer, last 3 layers} on one
tiny BERT, all reloaded in one fresh offline process that cannot import cardioner.
"""

from __future__ import annotations

import cmath
import math

import pytest
import torch
from test_export import (
    ID2LABEL,
    build_export,
    case_name,
    check_remote_reload,
    reload_in_fresh_process,
    train_steps,
)
from tiny import tiny_backbone
from transformers import AutoTokenizer, BertConfig

from cardioner import config as training_config
from cardioner.config import TrainingConfig, load_config
from cardioner.export import load_model, save_model
from cardioner.modeling import (
    HEAD_SETTINGS,
    TOKEN_HEADS,
    WAVELET_FILTERS,
    CardioNERConfig,
    HeadInput,
    TokenClassificationModel,
    WaveletKANHead,
    softmax_loss,
    wavelet_filter,
    wavelet_functions,
)
from cardioner.training.optim import parameter_groups

HEADS = tuple(TOKEN_HEADS)
SMALL = dict(lstm_hidden_size=8, cnn_num_filters=8, attention_hidden_size=16, attention_num_heads=2,
             num_frequencies=3, num_wavelets=3)  # small heads: the tests stay fast
# Each head is tried on the top layer (softmax: plain; CRF: [CLS]-combined) and on the last 3 hidden states of
# the 2-layer backbone (softmax: concatenated; CRF: learned mix), so every input option meets every head.
LAYERS = {"top": {}, "last3": {"num_layers_to_use": 3}}
CASES = [(head, use_crf, layers) for head in HEADS for use_crf in (False, True) for layers in LAYERS]


def settings_of(use_crf: bool, layers: str) -> dict:
    if layers == "top":
        return {**SMALL, "use_combined": use_crf}
    return {**SMALL, **LAYERS[layers], "layer_combination": "mix" if use_crf else "concat"}


def head_case(head: str, use_crf: bool, layers: str) -> str:
    return f"{case_name('bert', head, use_crf)}-{layers}"


@pytest.fixture(scope="module")
def head_round_trip(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    backbone = tiny_backbone("bert", root / "backbones")
    exports = {
        head_case(*case): build_export(
            "bert",
            case[0],
            case[1],
            backbone,
            root / "models",
            name=head_case(*case),
            **settings_of(case[1], case[2]),
        )
        for case in CASES
    }
    workdir = root / "remote"
    return exports, workdir, reload_in_fresh_process(exports, workdir)


def test_head_reload_process_cannot_import_cardioner(head_round_trip):
    assert head_round_trip[2]["cardioner_importable"] is False


@pytest.mark.parametrize("case", CASES, ids=[head_case(*case) for case in CASES])
def test_every_head_reloads_identically_without_cardioner(head_round_trip, case):
    exports, workdir, report = head_round_trip
    name = head_case(*case)
    check_remote_reload(exports[name], workdir / f"{name}.pt", report["cases"][name], use_crf=case[1])


# -- masking and shapes --------------------------------------------------------------------------------------

MASK = torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7])


def build_head(head: str, input_size: int = 12, num_outputs: int = 5, **settings) -> torch.nn.Module:
    torch.manual_seed(0)
    config = CardioNERConfig(head=head, id2label=ID2LABEL, **{**SMALL, **settings})
    return TOKEN_HEADS[head](input_size, num_outputs, config).eval()


@pytest.mark.parametrize("head", HEADS)
def test_padding_never_changes_a_real_tokens_emission(head):
    module = build_head(head)
    hidden = torch.randn(3, 9, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        emissions = module(hidden, MASK)
        assert emissions.shape == (3, 9, 5)
        changed = hidden.clone()
        changed[MASK == 0] = 10 * torch.randn(int((MASK == 0).sum()), 12)
        changed_emissions = module(changed, MASK)
    real = MASK.bool()
    torch.testing.assert_close(changed_emissions[real], emissions[real], atol=1e-6, rtol=0)


@pytest.mark.parametrize("head", HEADS)
def test_rows_without_real_tokens_stay_finite(head):
    module = build_head(head)
    with torch.no_grad():
        for mask in (torch.zeros(2, 4), torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])):
            emissions = module(torch.randn(2, 4, 12), mask)
            assert emissions.shape == (2, 4, 5) and torch.isfinite(emissions).all()


@pytest.mark.parametrize("head", ["bilstm", "cnn", "attention"])
def test_sequence_heads_read_their_neighbours(head):
    """The masking test is not vacuous: a sequence head's emissions do depend on other (real) tokens."""
    module = build_head(head)
    hidden = torch.randn(1, 9, 12, generator=torch.Generator().manual_seed(2))
    changed = hidden.clone()
    changed[0, 4] += 5.0
    with torch.no_grad():
        before, after = module(hidden, MASK[:1]), module(changed, MASK[:1])
    assert not torch.allclose(before[0, 3], after[0, 3])


@pytest.mark.parametrize("head", ["bilstm", "cnn", "attention"])
def test_left_padding_gives_the_same_emissions(head):
    module = build_head(head)
    hidden = torch.randn(1, 5, 12, generator=torch.Generator().manual_seed(3))
    left = torch.cat([torch.randn(1, 3, 12), hidden], dim=1)
    with torch.no_grad():
        right_emissions = module(
            torch.cat([hidden, torch.randn(1, 3, 12)], dim=1), torch.tensor([[1] * 5 + [0] * 3])
        )
        left_emissions = module(left, torch.tensor([[0] * 3 + [1] * 5]))
    torch.testing.assert_close(left_emissions[0, 3:], right_emissions[0, :5], atol=1e-6, rtol=0)


def test_cnn_keeps_the_length_for_even_kernels():
    module = build_head("cnn", cnn_kernel_sizes=(2, 4, 7))
    assert module(torch.randn(2, 6, 12), torch.ones(2, 6)).shape == (2, 6, 5)


def test_head_input_layers_and_cls():
    hidden = torch.randn(2, 4, 3, 8)  # (batch, seq_len, layers, hidden)
    backbone = BertConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2)
    mask = torch.ones(2, 4)

    concat = HeadInput(backbone, CardioNERConfig(num_layers_to_use=3, use_combined=True))
    features = concat(hidden, mask)
    assert concat.output_size == 48 and features.shape == (2, 4, 48)
    torch.testing.assert_close(features[:, 2, 24:], hidden[:, 0].flatten(1))  # the [CLS] (first token) state

    mix = HeadInput(backbone, CardioNERConfig(num_layers_to_use=3, layer_combination="mix"))
    assert mix.output_size == 8
    torch.testing.assert_close(mix(hidden, mask), hidden.mean(2))  # equal weights, gain 1 at the start
    with pytest.raises(ValueError, match="num_layers_to_use=4"):
        HeadInput(backbone, CardioNERConfig(num_layers_to_use=4))
    with pytest.raises(ValueError, match=r"\(batch, seq_len, 3, hidden\)"):
        mix(hidden[:, :, 0], mask)


def test_every_new_head_parameter_gets_the_head_learning_rate(tmp_path):
    backbone = tiny_backbone("bert", tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    config = TrainingConfig(lr=1e-5, head_lr=3e-3, crf_lr=1e-2)
    for head in HEADS:
        model = TokenClassificationModel.from_backbone(
            str(backbone),
            tokenizer,
            ID2LABEL,
            head=head,
            use_crf=True,
            num_layers_to_use=2,
            layer_combination="mix",
            **SMALL,
        )
        head_params = {
            id(p) for name, p in model.named_parameters() if name.startswith(("head.", "head_input."))
        }
        assert {name for name, _ in model.named_parameters() if name.startswith("head_input.")} == {
            "head_input.layer_weights", "head_input.layer_gain"}
        in_head_groups = {id(p) for group in parameter_groups(model, config) if group["lr"] == 3e-3
                          for p in group["params"]}
        assert head_params == in_head_groups, head


# -- wavelets ------------------------------------------------------------------------------------------------

def polynomial_roots(coefficients: list[float]) -> list[complex]:
    """Complex roots of ``sum_k coefficients[k] * y**k`` (Durand–Kerner iteration; for small degrees), lowest
    degree first; the last coefficient must be non-zero."""
    degree = len(coefficients) - 1
    monic = [c / coefficients[-1] for c in coefficients]
    roots = [complex(0.4, 0.9) ** k for k in range(degree)]
    for _ in range(200):
        for i, root in enumerate(roots):
            value = sum(c * root**k for k, c in enumerate(monic))
            roots[i] = root - value / math.prod(root - other for j, other in enumerate(roots) if j != i)
    return roots


def multiply(first: list[complex], second: list[complex]) -> list[complex]:
    """Product of two polynomials (coefficient lists, lowest degree first)."""
    product = [0j] * (len(first) + len(second) - 1)
    for i, a in enumerate(first):
        for j, b in enumerate(second):
            product[i + j] += a * b
    return product


def daubechies_filter(num_vanishing_moments: int) -> tuple[float, ...]:
    """The oracle of modeling.WAVELET_FILTERS: the scaling (low-pass) filter h of the Daubechies wavelet dbN
    (db1 = Haar), 2N taps, minimum phase, sum sqrt(2).

    Daubechies' construction by spectral factorisation: H(z) = sqrt(2) ((1 + 1/z) / 2)^N Q(1/z), where
    |Q|^2 on the unit circle is P(sin^2(w/2)) with P(y) = sum_{k<N} C(N-1+k, k) y^k. Each root y of P gives a
    pair z, 1/z of roots (y = (2 - z - 1/z) / 4); Q keeps the one inside the unit circle.
    """
    n = num_vanishing_moments
    polynomial = [1 + 0j]  # in powers of 1/z, lowest first
    for y in polynomial_roots([float(math.comb(n - 1 + k, k)) for k in range(n)]):
        middle = 2 - 4 * y  # z + 1/z
        z = min(((middle + s * cmath.sqrt(middle * middle - 4)) / 2 for s in (1, -1)), key=abs)
        polynomial = multiply(polynomial, [1, -z])
    for _ in range(n):
        polynomial = multiply(polynomial, [1, 1])
    scale = math.sqrt(2) / sum(c.real for c in polynomial)
    return tuple(c.real * scale for c in polynomial)


SQRT3 = math.sqrt(3)
DB4_PUBLISHED = [0.2303778133088964, 0.7148465705529154, 0.6308807679298587, -0.0279837694168599,
                 -0.1870348117190931, 0.0308413818355607, 0.0328830116668852, -0.0105974017850690]


def test_haar_and_daubechies_filters_equal_their_known_values():
    assert wavelet_filter("haar") == pytest.approx([1 / math.sqrt(2)] * 2, abs=1e-15)
    db2 = [
        (1 + SQRT3) / (4 * math.sqrt(2)),
        (3 + SQRT3) / (4 * math.sqrt(2)),
        (3 - SQRT3) / (4 * math.sqrt(2)),
        (1 - SQRT3) / (4 * math.sqrt(2)),
    ]  # Daubechies' closed form
    assert wavelet_filter("db2") == pytest.approx(db2, abs=1e-12)
    assert wavelet_filter("db4") == pytest.approx(DB4_PUBLISHED, abs=1e-12)


def test_literal_wavelet_filters_are_the_spectral_factorisation():
    """The model file's literal coefficients are the doubles the derivation gives (to the bit: exported
    wavelet heads compute what they computed when the model file derived them itself)."""
    assert set(WAVELET_FILTERS) == {"haar", "db2", "db4"}
    for name, moments in (("haar", 1), ("db2", 2), ("db4", 4)):
        assert WAVELET_FILTERS[name] == daubechies_filter(moments), name


@pytest.mark.parametrize("moments", [1, 2, 3, 4, 5])
def test_daubechies_filters_meet_their_definition(moments):
    """Sum sqrt(2), orthonormal to its even shifts, and N vanishing moments of the wavelet filter."""
    h = daubechies_filter(moments)
    assert len(h) == 2 * moments
    assert sum(h) == pytest.approx(math.sqrt(2), abs=1e-12)
    for shift in range(moments):
        inner = sum(h[k] * h[k + 2 * shift] for k in range(len(h) - 2 * shift))
        assert inner == pytest.approx(1.0 if shift == 0 else 0.0, abs=1e-12), shift
    for power in range(moments):
        assert sum((-1) ** k * k**power * c for k, c in enumerate(h)) == pytest.approx(0.0, abs=1e-9), power


def test_wavelet_functions_by_the_cascade_algorithm():
    phi, psi = wavelet_functions("haar", 6)
    grid = [m / 64 for m in range(len(psi))]
    assert list(psi) == pytest.approx([1.0 if x < 0.5 else (-1.0 if x < 1 else 0.0) for x in grid])
    assert list(phi) == pytest.approx([1.0 if x < 1 else 0.0 for x in grid])
    db2_phi, _ = wavelet_functions("db2", 6)
    assert db2_phi[64] == pytest.approx((1 + SQRT3) / 2) and db2_phi[128] == pytest.approx((1 - SQRT3) / 2)
    for name in ("haar", "db2", "db4"):
        phi, psi = wavelet_functions(name, 8)
        step = 1 / 256
        assert sum(phi) * step == pytest.approx(1.0, abs=1e-9), name  # integral of phi
        assert sum(psi) * step == pytest.approx(0.0, abs=1e-9), name  # integral of psi
        assert sum(v * v for v in psi) * step == pytest.approx(1.0, abs=1e-2), name  # unit norm


def test_wavelet_kan_basis_is_the_stretched_wavelet():
    """One Haar wavelet centred at 0 with half-width 2: +1 on (-2, 0), -1 on (0, 2), 0 outside."""
    module = WaveletKANHead(1, 2, CardioNERConfig(head="wavelet_kan", wavelet_type="haar", num_wavelets=1))
    values = module.basis(torch.tensor([[-1.0], [1.0], [3.0], [-2.5]]))  # shape: (4, 1 input, 1 wavelet)
    assert values.flatten().tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0])
    mixed = WaveletKANHead(4, 2, CardioNERConfig(head="wavelet_kan", wavelet_type="mixed", num_wavelets=6))
    assert mixed._kinds == [0, 1, 2, 0, 1, 2] and mixed.basis(torch.randn(5, 4)).shape == (5, 4, 6)
    features = torch.randn(5, 4, requires_grad=True)
    mixed.basis(features).sum().backward()  # scales and translations learn through the interpolation
    assert mixed.log_scales.grad is not None and mixed.log_scales.grad.abs().sum() > 0


KAN_HEADS = ("fourier_kan", "wavelet_kan")


def kan_model(head: str, backbone_dir, **settings) -> TokenClassificationModel:
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(backbone_dir)
    return TokenClassificationModel.from_backbone(str(backbone_dir), tokenizer, ID2LABEL, head=head,
                                                  **{**SMALL, **settings})


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return tiny_backbone("bert", tmp_path_factory.mktemp("kan-backbone"))


@pytest.mark.parametrize("head", KAN_HEADS)
def test_a_fresh_kan_head_computes_what_its_linear_path_computes_and_its_basis_term_learns(head, tiny_bert):
    model = kan_model(head, tiny_bert).eval()
    assert model.config.config_version == 2 and model.head.uses_basis_mean
    assert torch.count_nonzero(model.head.classifier.weight) == 0  # the basis term starts at zero
    hidden = torch.randn(2, 5, model.head_input.output_size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        linear_path = model.head.residual(hidden) + model.head.classifier.bias
        torch.testing.assert_close(model.head(hidden, torch.ones(2, 5)), linear_path, atol=1e-6, rtol=0)
    train_steps(model, AutoTokenizer.from_pretrained(tiny_bert), steps=1)
    assert torch.count_nonzero(model.head.classifier.weight) > 0  # zero weights still get gradients


@pytest.mark.parametrize("head", KAN_HEADS)
def test_kan_heads_average_their_basis_and_version_1_configs_keep_the_sum(head):
    """Version 2 (new models) takes the mean over the basis functions; a model saved with config_version 1
    sums them, as it was trained to (tests/test_export_compat.py checks such an export's outputs)."""
    new = build_head(head)
    old_config = CardioNERConfig(head=head, id2label=ID2LABEL, config_version=1, **SMALL)
    old = TOKEN_HEADS[head](12, 5, old_config).eval()
    old.load_state_dict(new.state_dict())
    num_basis = new.classifier.in_features // 12
    assert (new.basis_scale, old.basis_scale, old.uses_basis_mean) == (1 / num_basis, 1.0, False)
    hidden = torch.randn(3, 4, 12, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        basis = new.basis(new.norm(hidden)).flatten(-2)  # shape: (3, 4, 12 * num_basis)
        torch.testing.assert_close(new(hidden, torch.ones(3, 4)),
                                   new.residual(hidden) + new.classifier(basis / num_basis),
                                   atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(old(hidden, torch.ones(3, 4)),
                                   old.residual(hidden) + old.classifier(basis), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("head", KAN_HEADS)
def test_loading_a_kan_model_keeps_its_trained_basis_weights(head, tiny_bert, tmp_path):
    """The zero start is for fresh heads only: an export's learned weights come back as saved."""
    model = kan_model(head, tiny_bert)
    train_steps(model, AutoTokenizer.from_pretrained(tiny_bert))
    folder = save_model(model, AutoTokenizer.from_pretrained(tiny_bert), tmp_path / head)
    loaded, _ = load_model(folder)
    assert torch.count_nonzero(model.head.classifier.weight) > 0
    torch.testing.assert_close(loaded.head.classifier.weight, model.head.classifier.weight, atol=0, rtol=0)


# -- losses and configuration --------------------------------------------------------------------------------


def test_focal_loss_and_label_smoothing_against_references():
    generator = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(7, 5, generator=generator), torch.tensor([0, 1, 4, -100, 2, 2, -100])
    weight = torch.tensor([0.5, 1.0, 2.0, 1.0, 3.0])
    plain = torch.nn.functional.cross_entropy(logits, targets, weight=weight, label_smoothing=0.1)
    assert softmax_loss(logits, targets, weight, label_smoothing=0.1) == pytest.approx(float(plain))
    assert softmax_loss(logits, targets, weight, 0.1, focal_gamma=1e-12) == pytest.approx(
        float(plain), rel=1e-6
    )
    reference, total = 0.0, 0.0
    for row, target in zip(logits, targets.tolist(), strict=True):
        if target == -100:
            continue
        probability = row.softmax(0)[target]
        reference += -weight[target] * (1 - probability) ** 2 * probability.log()
        total += weight[target]
    assert softmax_loss(logits, targets, weight, focal_gamma=2.0) == pytest.approx(
        float(reference / total), rel=1e-5
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("num_layers_to_use", 0, "num_layers_to_use must be >= 1, got 0"),
        ("layer_combination", "sum", "invalid layer_combination 'sum'"),
        ("wavelet_type", "db3", "invalid wavelet_type 'db3'"),
        ("cnn_kernel_sizes", [3, 0], r"cnn_kernel_sizes must be positive integers, got \[3, 0\]"),
        (
            "attention_hidden_size",
            30,
            r"attention_hidden_size \(30\) must be a multiple of attention_num_heads \(4\)",
        ),
        ("label_smoothing", 1.0, r"label_smoothing must be in \[0, 1\), got 1.0"),
        ("focal_gamma", -1, "focal_gamma must be >= 0, got -1"),
        ("lstm_dropout", 1.5, r"lstm_dropout must be in \[0, 1\), got 1.5"),
    ],
)
def test_bad_head_settings_are_named(key, value, message):
    with pytest.raises(ValueError, match=message):
        CardioNERConfig(**{key: value})


def test_softmax_loss_options_refuse_a_crf():
    with pytest.raises(ValueError, match="focal_gamma"):
        CardioNERConfig(use_crf=True, focal_gamma=2.0)


def test_head_settings_are_config_keys_and_model_arguments():
    """The training config's model section has one key per row of HEAD_SETTINGS, with its default, its
    choices and its bounds (checked at load, naming the key); the model's config takes each as an argument."""
    import inspect

    arguments = inspect.signature(CardioNERConfig).parameters
    defaults = training_config.ModelConfig()
    for name, setting in HEAD_SETTINGS.items():
        assert name in arguments, name
        assert getattr(defaults, name) == setting.default, name
        if setting.choices:
            assert training_config.CHOICES[f"model.{name}"] == setting.choices, name
    config = load_config(overrides={f"model.{name}": value for name, value in
                                    {"cnn_kernel_sizes": "3,5", "layer_combination": "mix"}.items()})
    assert config.model.cnn_kernel_sizes == (3, 5) and config.model.layer_combination == "mix"
    with pytest.raises(training_config.ConfigError, match="model.lstm_hidden_size must be >= 1, got 0"):
        load_config(overrides={"model.lstm_hidden_size": 0})
    with pytest.raises(training_config.ConfigError, match="model.wavelet_type must be one of haar, db2"):
        load_config(overrides={"model.wavelet_type": "db8"})


# -- the head-settings table ---------------------------------------------------------------------------------


def test_the_head_settings_table_gives_the_model_config_its_defaults_and_types():
    config = CardioNERConfig()
    for name, setting in HEAD_SETTINGS.items():
        expected = list(setting.default) if setting.type is tuple else setting.default
        assert getattr(config, name) == expected, name
        assert type(getattr(config, name)) is (list if setting.type is tuple else setting.type), name
        assert set(setting.heads) <= set(HEADS), name
        assert not setting.choices or setting.default in setting.choices, name
        assert setting.help and "\n" not in setting.help, name
    assert HEAD_SETTINGS["head"].choices == HEADS
    settings = {"head": "cnn", "cnn_kernel_sizes": (2, 3), "use_crf": True, "crf_reduction": "sum"}
    again = CardioNERConfig.from_dict(CardioNERConfig(**settings).to_dict())
    assert {name: getattr(again, name) for name in settings} == {**settings, "cnn_kernel_sizes": [2, 3]}


# A second allowed value of each setting a head reads (the first: SMALL's, else the table's default).
CHANGED = {
    "classifier_hidden_layers": [16, 8],
    "classifier_activation": "relu",
    "lstm_hidden_size": 16,
    "lstm_num_layers": 3,
    "lstm_dropout": 0.5,
    "cnn_kernel_sizes": (2, 3),
    "cnn_num_filters": 16,
    "attention_hidden_size": 32,
    "attention_num_heads": 4,
    "attention_num_layers": 2,
    "num_frequencies": 6,
    "wavelet_type": "db2",
    "num_wavelets": 6,
}


@pytest.mark.parametrize("name", [name for name, setting in HEAD_SETTINGS.items() if setting.heads])
def test_a_head_reads_exactly_the_settings_the_table_says_it_does(name):
    """Changing a setting changes the (seeded, training-mode) output of the heads the table names for it, and
    of no other head."""
    assert set(CHANGED) == {n for n, setting in HEAD_SETTINGS.items() if setting.heads}
    base = {**SMALL, "classifier_hidden_layers": [16], "lstm_num_layers": 2}
    hidden = torch.randn(3, 9, 12, generator=torch.Generator().manual_seed(4))
    for head in HEADS:
        outputs = []
        for value in (base.get(name, HEAD_SETTINGS[name].default), CHANGED[name]):
            torch.manual_seed(0)
            config = CardioNERConfig(head=head, id2label=ID2LABEL, **{**base, name: value})
            module = TOKEN_HEADS[head](12, 5, config).train()
            torch.manual_seed(1)  # the same dropout masks
            outputs.append(module(hidden, MASK))
        differs = outputs[0].shape != outputs[1].shape or not torch.equal(*outputs)
        assert differs == (head in HEAD_SETTINGS[name].heads), (name, head)
