"""The engine's training step against the authors' training iterations (``../shared/fixtures/train_<model>_<bb>.pt``).

Each fixture holds a few steps of the authors' loop (HSNet's ``train.py``, VAT's ``train.py``, ifsl fs-s' Lightning
step for ASNet; fixtures/README.md): ``train_mode()``, the 1-shot forward, the objective, ``zero_grad``,
``backward``, the optimizer step, from ``fill_params`` weights. They are replayed here through hmrepro's own
``create_model``, the recipe's optimizer built by ``build_optimizer`` and the engine's ``train_step`` (the very
function ``hmrepro train`` calls), and compared with the README's tolerances, which are never loosened: per-step
losses and the first step's gradient norm of every parameter to 1e-4 relative, the eval-mode logits after the
last step within ``rtol=1e-3, atol=1e-3``. Every ``train_*`` fixture found is checked (more models, backbones
and steps need no change here).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import FIXTURES, fixture_files, fixture_id, reference_path
from model_weights import fill_params, load_fixture

from hmrepro import create_model
from hmrepro.engine.recipes import resolve
from hmrepro.engine.training.train import build_optimizer, train_step

pytestmark = pytest.mark.slow  # a VAT step at 473 px takes minutes on a CPU; HSNet's three steps ~10 s

FIXTURE_FILES = fixture_files("train_*_*.pt")
RTOL = 1e-4  # losses and gradient norms (fixtures/README.md)
OPTIMIZERS = {"Adam": "adam", "AdamW": "adamw", "SGD": "sgd"}  # the fixtures' meta names -> build_optimizer's

# Known divergences, measured. A rounding-limited gradient norm of a listed kind beyond 1e-4 turns the check into an
# xfail naming it; any other failure fails. ASNet's learner is sensitive to float32 rounding on this episode (a
# small support mask): perturbing hmrepro's learner input by 1e-7 / 1e-6 relative moves asnet-hm's step-0 gradient
# norms by 5e-5 / 2.3e-4 relative and its logits after two steps by 1.2e-4 / 3.8e-3. The channels-last backbone's
# taps differ from the authors' NCHW ones by ~1e-6, so ASNet trains with an NCHW backbone on the CPU (ASNet.train):
# its training step then gives the authors' code's numbers bit for bit on the same machine.
# ASNet trains through the authors' explicit softmax (squeeze_attention): its q/k gradients match, unmarked.
ROUNDING_LIMITED: dict[str, tuple[re.Pattern, str]] = {}  # family -> (parameter-name pattern, the measured reason)
KNOWN_DIVERGENCES: dict[tuple[str, str], str] = {}  # (fixture stem, "gradients" | "logits") -> the measured reason


def _known_divergence(request, replay: dict, check: str) -> None:
    reason = KNOWN_DIVERGENCES.get((replay["stem"], check))
    if reason:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=False))


def _rounding_limited(model_name: str, names: list[str]) -> str | None:
    """The reason why every parameter of ``names`` is rounding-limited for this family, or None."""
    family = model_name.split("-")[0]
    pattern, reason = ROUNDING_LIMITED.get(family, (None, None))
    if pattern is None or not all(pattern.fullmatch(name) for name in names):
        return None
    return reason


def _model_and_backbone(path: Path, meta: dict) -> tuple[str, str]:
    name, backbone = re.fullmatch(r"train_(.+)_([a-z0-9]+)\.pt", path.name).groups()
    return meta.get("model", name), meta.get("backbone", backbone)


def _batch(inputs: dict, meta: dict) -> dict:
    """The fixture's training batch: all episodes of the inputs, or the first only (``meta["batch"]``)."""
    n = 1 if "[:1]" in meta.get("batch", "") else inputs["query_img"].shape[0]
    return {
        "query_img": inputs["query_img"][:n],
        "support_imgs": inputs["support_imgs"][:n],
        "support_masks": inputs["support_masks"][:n].float(),
        "query_mask": inputs["query_mask"][:n].float(),
    }


def _seeds(meta: dict, steps: int) -> list[int | None]:
    """The seed set right before each step's forward (``torch.manual_seed(1000 + step)``), or none."""
    rule = meta.get("seeds", "")
    if not rule:
        return [None] * steps
    offset = int(re.fullmatch(r"torch\.manual_seed\((\d+) \+ step\).*", rule).group(1))
    return [offset + step for step in range(steps)]


def _recipe(model_name: str, meta: dict) -> dict:
    return resolve(model_name, meta.get("benchmark", "pascal"))


def _check_relative(actual: torch.Tensor, expected: torch.Tensor, what: str, names: list[str] | None = None) -> None:
    """Every entry within ``RTOL`` of the authors' (relative)."""
    actual, expected = actual.double(), expected.double()
    bad = (actual - expected).abs() > RTOL * expected.abs()
    _fail_on(bad, actual, expected, f"{what}: beyond {RTOL} relative", names)


def _fail_on(bad: torch.Tensor, actual: torch.Tensor, expected: torch.Tensor, what: str, names=None) -> None:
    if bad.any():
        rows = [
            f"  {names[i] if names else i}: {actual[i].item():.8g} vs {expected[i].item():.8g}"
            for i in bad.nonzero().flatten()[:12].tolist()
        ]
        pytest.fail(f"{what}: {int(bad.sum())} of {bad.numel()}\n" + "\n".join(rows))


@pytest.fixture(scope="module", params=FIXTURE_FILES, ids=fixture_id)
def replay(request):
    """Replay one fixture's training steps through the engine's ``train_step``; the tests compare the pieces."""
    path = reference_path(request.param)
    expected = load_fixture(path)
    meta = expected["meta"]
    model_name, backbone = _model_and_backbone(path, meta)
    inputs = load_fixture(FIXTURES / meta["inputs"])
    batch = _batch(inputs, meta)
    recipe = _recipe(model_name, meta)

    model = create_model(model_name, backbone=backbone, pretrained=False, benchmark=meta.get("benchmark", "pascal"))
    fill_params(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(recipe["optimizer"], params, float(recipe["lr"]), float(recipe["weight_decay"]))
    losses, grad_norms = [], None
    for seed in _seeds(meta, int(meta["steps"])):
        if seed is not None:
            torch.manual_seed(seed)
        loss, _ = train_step(model, batch, optimizer)
        losses.append(loss.item())
        if grad_norms is None:
            grad_norms = {name: p.grad.norm() for name, p in model.named_parameters() if p.grad is not None}
    state = model.state_dict()
    params_after = {k: state[k.removeprefix("param_after.")].clone() for k in expected if k.startswith("param_after.")}
    with torch.no_grad():
        logits = model.eval()(batch["query_img"], batch["support_imgs"][:, 0], batch["support_masks"][:, 0])
    return {
        "stem": path.stem,
        "model": model_name,
        "expected": expected,
        "recipe": recipe,
        "losses": losses,
        "grad_norms": grad_norms,
        "logits": logits,
        "params_after": params_after,
    }


def test_recipe_optimizer_is_the_authors(replay):
    """The recipe that builds the replayed optimizer names the optimizer, lr and weight decay of the authors' loop."""
    meta, recipe = replay["expected"]["meta"], replay["recipe"]
    assert recipe["optimizer"] == OPTIMIZERS[meta["optimizer"]]
    assert float(recipe["lr"]) == meta["lr"]
    assert float(recipe["weight_decay"]) == meta.get("weight_decay", 0.0)
    for key in ("decoder_lr", "decoder_weight_decay"):  # VAT's second parameter group: the same values
        if key in meta:
            assert meta[key] == meta[key.replace("decoder_", "")], f"{key} differs from the first group's"


def test_losses(replay):
    _check_relative(torch.tensor(replay["losses"]), replay["expected"]["losses"], "per-step losses")


def test_gradient_norms_first_step(replay, request):
    """The first step's gradient norm of every parameter: exactly 0 where the authors' is exactly 0 (a gradient
    that cannot exist, e.g. ASNet's query/key heads where the attention weights are fixed: Adam would otherwise
    move them); 1e-4 relative for the rest, except norms under the float32 rounding of the whole gradient
    (``eps`` × the largest norm), which are rounding noise in both codes (ASNet's key-head bias: softmax is
    shift-invariant, so its exact gradient is 0) and must stay under it here too."""
    names = replay["expected"]["meta"]["grad_param_names"]
    got = replay["grad_norms"]
    assert sorted(got) == sorted(names), "the parameters that receive a gradient differ from the authors'"
    actual = torch.stack([got[n] for n in names]).double()
    expected = replay["expected"]["grad_norms_step0"].double()
    _fail_on((expected == 0) & (actual != 0), actual, expected, "nonzero where the authors' gradient is 0", names)
    _known_divergence(request, replay, "gradients")  # only the relative comparisons below
    floor = torch.finfo(torch.float32).eps * expected.max()
    noise = (expected > 0) & (expected < floor)
    _fail_on(noise & (actual >= floor), actual, expected, f"above the rounding floor {floor:.3g}", names)
    checked = expected >= floor
    bad = checked & ((actual - expected).abs() > RTOL * expected)
    beyond = [names[i] for i in bad.nonzero().flatten().tolist()]
    reason = _rounding_limited(replay["model"], beyond) if beyond else None
    if reason:
        rows = [f"{n}: {got[n].item():.8g} vs {expected[names.index(n)].item():.8g}" for n in beyond]
        pytest.xfail(f"{reason}. Beyond {RTOL}: " + "; ".join(rows))
    _fail_on(bad, actual, expected, f"grad norms beyond {RTOL} relative", names)


def test_logits_after_steps(replay, request):
    _known_divergence(request, replay, "logits")
    torch.testing.assert_close(replay["logits"], replay["expected"]["logit_mask_after"], rtol=1e-3, atol=1e-3)


def test_parameters_after_steps(replay):
    """The learner's last decoder block after the last step (HSNet's fixtures hold it), to the logits' tolerance."""
    if not replay["params_after"]:
        pytest.skip("fixture holds no param_after.* entries")
    for key, value in replay["params_after"].items():
        torch.testing.assert_close(
            value, replay["expected"][key], rtol=1e-3, atol=1e-3, msg=lambda m, k=key: f"{k}: {m}"
        )
