"""``hmrepro domain-shift``: COCO-20i models tested on PASCAL (HM Table 4), with result records."""

from __future__ import annotations

import typer

from .common import (
    ShotOption,
    console,
    episode_seed_option,
    episodes_option,
    img_size_option,
    option_group,
    pretrained_option,
)
from .eval import EvalRun, FoldChoice
from .rich_progress import RichProgress
from .train import few_shot_model


@option_group("run", EvalRun)
def domain_shift(
    model: str = typer.Argument(
        ...,
        callback=few_shot_model,
        help="Model trained on COCO-20i: hsnet-hm, vat-hm, hsnet, vat, ...",
        show_default=False,
    ),
    weights: str = typer.Option(
        ...,
        "--weights",
        "-w",
        help="COCO-20i checkpoint file or run folder ({fold} in the path for --fold all), 'official' (the authors' "
        "COCO-20i checkpoint) or 'random' (untrained, for checks).",
    ),
    fold: FoldChoice = typer.Option(
        FoldChoice.f0, "--fold", "-f", help="COCO-20i fold of the model, or all (the paper's mean)."
    ),
    shot: int = ShotOption,
    img_size: int | None = img_size_option(
        "Image side [default: the size the checkpoint trained at, else the model's COCO recipe (400 for HSNet)]."
    ),
    episodes: int | None = episodes_option(
        "Only the first N of the 1000 fixed episodes (quick checks) [default: all]."
    ),
    episode_seed: int = episode_seed_option(
        "Another draw of the episodes by the same protocol (0: hmrepro's fixed domain-shift episodes). Records "
        "say so and fill no table cell."
    ),
    bsz: int = typer.Option(
        1, "--bsz", min=1, help="Episodes per batch through the model (1 as the authors; README, Batched evaluation)."
    ),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader worker processes."),
    pretrained: bool = pretrained_option("ImageNet backbone for --weights random."),
    *,
    run: EvalRun,
) -> None:
    """Test a COCO-20i model on PASCAL VOC (domain shift, Table 4 of the HM paper); one record per fold.

    Fold f tests on the PASCAL classes not among COCO-20i fold f's training classes (RePRI/HSNet folds):
    0 aeroplane, boat, chair, diningtable, dog, person; 1 bicycle, bus, horse, sofa; 2 bird, car, pottedplant,
    sheep, train, tvmonitor; 3 bottle, cat, cow, motorbike.

    The paper gives no episode lists or image size; hmrepro's choice (also written into each record): queries are
    the entries of the PASCAL-5i val lists of all four folds whose class is a test class (817/292/438/321 entries),
    supports are drawn from the same class, 1000 episodes per fold with the model's protocol (HSNet's: NumPy seeded
    once with 0), images at the checkpoint's training size (400 for HSNet) with the model's own preprocessing (VAT's
    for vat*), PASCAL's 255 ignored. Records have
    kind 'domain-shift' and benchmark 'coco2pascal'; `hmrepro table 4` reads them.

    Example: [bold]hmrepro domain-shift hsnet-hm --fold all --weights runs/hsnet-hm_resnet50_coco_fold{fold}[/]

    Example (authors' weights, 5-shot): [bold]hmrepro domain-shift hsnet-hm --fold all --shot 5 --weights official[/]
    """
    from ..engine.evaluation.evaluate import evaluate_domain_shift

    if weights == "random":
        console.print("[yellow]note:[/] records of random weights (origin 'random') never show in `hmrepro table 4`")
    with RichProgress(run.progress) as bars:
        records = evaluate_domain_shift(
            model,
            fold.value,
            shot,
            weights=weights,
            img_size=img_size,
            bsz=bsz,
            workers=workers,
            episodes=episodes,
            pretrained=pretrained,
            progress=bars,
            episode_seed=episode_seed,
            **run.settings(),
        )
    run.show(records, f"{model} ({run.backbone}) COCO-20i → PASCAL, {shot}-shot")
