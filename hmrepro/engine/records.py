"""Result records: one JSON file per evaluated (model, benchmark, fold, shot), written atomically, never
overwriting another record. Tables read them all.

Fields (``RECORD_FIELDS``): model, masking, backbone, benchmark, fold, shot, miou, fb_iou, episodes, protocol,
img_size, original_size, checkpoint_sha256, origin (``ORIGINS``: 'official' = a checkpoint the authors published,
recognised by its sha256; 'own' = an hmrepro training run; 'external' = any other file; 'random' = untrained
weights), git_commit, versions, device, date, secs_per_episode; optional extras (preprocess, kind: 'eval' | 'bench' |
'domain-shift', run_dir, ...).

Per-episode results (:mod:`hmrepro.engine.evaluation.per_episode`): a record given ``per_episode`` (the runner's
table) is
written with a compressed NumPy file beside it, ``<record stem>.episodes.npz`` (written first, atomically; the
record names it in ``per_episode_file`` with its ``per_episode_sha256``); :func:`read_episodes` reads it back as a
DataFrame. A sidecar keeps the JSON records small and readable (tables parse every record) while the integer
columns stay exact; it is loaded without pickle.

What protocol a record followed (:func:`record_protocol_fields`, merged into every eval and domain-shift record):
``precision`` ('fp32' | 'bf16'; ``amp`` kept as a boolean for older readers), ``full_episode_set`` and
``total_episodes``, ``img_size`` and the model's ``default_img_size``, ``original_size``. One function,
:func:`protocol_deviations`, judges a record against the full protocol — every episode of the fold, the model's
default image size for the benchmark, fp32, network resolution (or original size where that is asked for) — and
tables fill their cells with full-protocol records only. Older records are judged by what they say: no
``precision`` means ``amp`` decides (absent or false: fp32); no ``full_episode_set`` means not the full set.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

from ..atomic import atomic_write_bytes, atomic_write_text, sha256_bytes
from ..errors import HmreproError
from .record_schema import RECORD_SCHEMA

SETTING_FIELDS = ("model", "masking", "backbone", "benchmark", "fold", "shot")  # what was evaluated
PROTOCOL_FIELDS = ("protocol", "img_size", "original_size", "checkpoint_sha256", "origin")  # how, and which weights
RECORD_FIELDS = (
    *SETTING_FIELDS,
    "miou",
    "fb_iou",
    "episodes",
    *PROTOCOL_FIELDS,
    "git_commit",
    "versions",
    "device",
    "date",
    "secs_per_episode",
)
ORIGINS = ("official", "own", "external", "random")
PRECISIONS = ("fp32", "bf16")
FULL_PRECISION = "fp32"
DOMAIN_SHIFT_TRAINED_ON = "coco"  # domain-shift records whose trained_on is missing: COCO-20i models tested on PASCAL
PER_EPISODE = "per_episode"  # a record's in-memory per-episode table, written beside it (never into the JSON)
EPISODES_SUFFIX = ".episodes.npz"


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the hmrepro checkout (None when not installed from git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str | None]:
    import torch
    import torchvision

    from .. import __version__

    return {
        "hmrepro": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def machine_fields(device) -> dict:
    """The record fields that say which code ran where and when: ``git_commit``, ``versions``, ``device``,
    ``device_name``, ``torch_threads`` (CPU kernels, hence float rounding, can depend on it) and ``date``."""
    from .runs import device_description

    info = device_description(device)
    fields = {
        "git_commit": git_commit(),
        "versions": versions(),
        "device": info["device"],
        "device_name": info["device_name"],
        "torch_threads": info["torch_threads"],
        "date": now_iso(),
    }
    if str(info["device"]).startswith("cuda"):
        fields["cuda_numerics"] = cuda_numerics()
    return fields


def cuda_numerics() -> dict:
    """The CUDA settings that change numbers or speed, as they stand: TF32 in matmuls and in cuDNN convolutions,
    cuDNN autotuning and determinism."""
    import torch

    backends = torch.backends
    return {
        "tf32_matmul": backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": backends.cudnn.allow_tf32,
        "cudnn_benchmark": backends.cudnn.benchmark,
        "cudnn_deterministic": backends.cudnn.deterministic,
    }


def _slug(value) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-")


def ensure_writable_dir(path: Path, option: str = "--results") -> Path:
    """Create ``path`` if needed and prove it takes a new file; raise a one-line ``HmreproError`` naming it if not.

    Called before long work starts, so an unwritable output location fails in a second, not after an hour.
    """
    from ..errors import HmreproError

    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".hmrepro-write-test-")
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise HmreproError(f"{option} {path}: a file stands where the folder should be; pass a folder") from None
    except OSError as err:
        reason = err.strerror or str(err)
        raise HmreproError(
            f"{option} {path}: cannot write there ({reason}); pass a writable folder with {option}"
        ) from None
    return path


def save_records(records: list[dict], results_dir: Path | None) -> list[dict]:
    """Write each record (its ``path`` is added); a record that cannot be written gets ``save_error`` instead, so
    the numbers already computed are never lost: the caller shows them and the error."""
    for record in records:
        try:
            if results_dir is not None:
                record["path"] = str(write_record(record, Path(results_dir)))
        except OSError as err:
            record["save_error"] = f"could not write a record to {results_dir}: {err.strerror or err}"
        record.pop(PER_EPISODE, None)  # on disk beside the record; the returned records stay plain JSON
    return records


def write_record(record: dict, results_dir: Path) -> Path:
    """Write ``record`` as a new file in ``results_dir`` and return its path; never overwrites a record.

    Missing required fields raise ``ValueError``; a record without ``precision`` is written with the one its
    ``amp`` implies (:func:`precision_of`). The file name says what it holds:
    ``<model>_<backbone>_<benchmark>_fold<f>_<k>shot_<origin>_<date>[_<n>].json``.
    """
    missing = [f for f in RECORD_FIELDS if f not in record]
    if missing:
        raise ValueError(f"result record lacks fields: {', '.join(missing)}")
    if record["origin"] not in ORIGINS:
        raise ValueError(f"origin {record['origin']!r} is not one of {', '.join(ORIGINS)}")
    record = {"precision": precision_of(record), "record_schema": RECORD_SCHEMA, **record}
    per_episode = record.pop(PER_EPISODE, None)
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = "_".join(
        _slug(x)
        for x in (
            record.get("kind", "eval"),
            record["model"],
            record["backbone"],
            record["benchmark"],
            f"fold{record['fold']}",
            f"{record['shot']}shot",
            record["origin"],
            record["date"].replace(":", ""),
        )
    )
    for n in range(10_000):
        path = results_dir / (f"{stem}.json" if n == 0 else f"{stem}_{n}.json")
        try:
            # O_EXCL claims the name atomically: two writers never share a file
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        _fill_claimed_record(path, record, per_episode)
        return path
    raise RuntimeError(f"could not find a free record name for {stem} in {results_dir}")


def _fill_claimed_record(path: Path, record: dict, per_episode: dict | None) -> None:
    """Write ``record`` (and its per-episode file first) into the empty file ``path`` claimed for it; a failed
    write removes both, so no empty or half-written record is left behind."""
    try:
        if per_episode is not None:
            record.update(_write_per_episode(path, per_episode, record.get("eval_class_ids")))
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n", what="result record")
    except BaseException:
        path.unlink(missing_ok=True)
        if record.get("per_episode_file"):
            (path.parent / record["per_episode_file"]).unlink(missing_ok=True)
        raise


def _write_per_episode(record_path: Path, table: dict, class_ids) -> dict:
    """Write ``table`` beside ``record_path`` (atomically) and return the record fields that name it."""
    import numpy as np

    from .evaluation.per_episode import table_bytes

    if class_ids is None:  # the classes the episodes touch (records give eval_class_ids)
        class_ids = sorted({int(c) for c in np.asarray(table["class_id"]).tolist()})
    data = table_bytes(table, class_ids)
    sidecar = record_path.with_name(record_path.name[: -len(".json")] + EPISODES_SUFFIX)
    atomic_write_bytes(sidecar, data, what="per-episode file")
    return {"per_episode_file": sidecar.name, "per_episode_sha256": sha256_bytes(data)}


def read_episode_table(record_path: Path) -> tuple[dict, dict, list]:
    """(record, per-episode table as numpy columns, the classes mIoU averages over) of the record at
    ``record_path``, both checked (:mod:`hmrepro.engine.record_schema`: the sidecar's sha256, its counts, and the
    record's mIoU and FB-IoU recomputed from it); a one-line ``HmreproError`` naming the file otherwise."""
    from .record_schema import RecordError, load_record, load_sidecar

    record_path = Path(record_path)
    real = record_path.resolve()  # a path the user named may be a link; its sidecar lies beside the file itself
    try:
        record = load_record(real)
    except RecordError as err:
        raise HmreproError(f"{record_path}: {err}") from None
    if record is None:
        raise HmreproError(f"{record_path}: is not a result record")
    if not record.get("per_episode_file"):
        raise HmreproError(
            f"{record_path}: the record has no per-episode results (written before hmrepro recorded them); "
            "evaluate again to get them"
        )
    try:
        table, class_ids = load_sidecar(record, real)
    except RecordError as err:
        raise HmreproError(f"{record_path}: {err}") from None
    record["path"] = str(record_path)
    return record, table, class_ids


def read_episodes(record_path: Path):
    """The per-episode results of a record as a pandas DataFrame with exactly the columns ``episode, class_id,
    fg_inter, fg_union, bg_inter, bg_union, query_fg_fraction, support_fg_fraction`` (see
    :mod:`hmrepro.engine.evaluation.per_episode`)."""
    import pandas as pd

    from .evaluation.per_episode import EPISODE_COLUMNS

    _, table, _ = read_episode_table(record_path)
    return pd.DataFrame({c: table[c] for c in EPISODE_COLUMNS}, columns=list(EPISODE_COLUMNS))


def read_records(results_dir: Path, problems: list[str] | None = None) -> Iterator[dict]:
    """Every valid record below ``results_dir`` (:mod:`hmrepro.engine.record_schema`), each with its ``path``.

    A file that cannot be read (not a regular file, a link out of the folder, too large, too deeply nested), is not
    JSON, fails the record schema, or names a per-episode file that does not agree with it is skipped; with
    ``problems``, one line naming each such file and the field or reason is appended to it (JSON files of other
    kinds, e.g. a run's ``config.json``, are passed over without a word). A bad file never stops the others.
    """
    results_dir = Path(results_dir)
    for path in sorted(results_dir.rglob("*.json")):
        record, problem = _read_record(path, results_dir)
        if problem and problems is not None:
            problems.append(f"skipped {path}: {problem}")
        if record is not None:
            yield record


def _read_record(path: Path, folder: Path | None = None) -> tuple[dict | None, str | None]:
    """(record, None), (None, why it is skipped) or (None, None) for a JSON file that is no record at all (or a
    folder named ``*.json``). A record naming a per-episode file is read with it and refused unless they agree."""
    from .record_schema import RecordError, load_record, load_sidecar

    if path.is_dir() and not path.is_symlink():
        return None, None  # a folder named *.json: rglob walks into it
    try:
        record = load_record(path, folder)
        if record is not None and record.get("per_episode_file"):
            load_sidecar(record, path)
    except RecordError as err:
        return None, str(err)
    return record, None


# ---------------------------------------------------------------------------------------------------------------
# What protocol a record followed
# ---------------------------------------------------------------------------------------------------------------


def record_protocol_fields(
    *,
    amp: bool | str | None,
    episodes: int,
    total_episodes: int,
    img_size: int,
    default_img_size: int,
    original_size: bool,
) -> dict:
    """The record fields that say which protocol produced a number (merge them into every eval/domain-shift record).

    ``amp`` is the evaluation's autocast setting (False/None: fp32, True: bf16, or a precision name);
    ``episodes`` how many were evaluated of the fold's ``total_episodes``; ``default_img_size`` the model's size
    for the benchmark (:func:`default_img_size`).
    """
    precision = precision_of({"amp": amp})
    return {
        "precision": precision,
        "amp": precision != FULL_PRECISION,
        "full_episode_set": int(episodes) == int(total_episodes),
        "total_episodes": int(total_episodes),
        "img_size": int(img_size),
        "default_img_size": int(default_img_size),
        "original_size": bool(original_size),
    }


def precision_of(record: dict) -> str:
    """The record's ``precision``; for records without it, the one ``amp`` implies (absent or false: fp32)."""
    if record.get("precision"):
        return str(record["precision"])
    amp = record.get("amp")
    if amp is None or amp is False or str(amp).lower() in ("", "none", "off", "false", "no", FULL_PRECISION):
        return FULL_PRECISION
    return "bf16" if amp is True else str(amp).lower()


def default_img_size(model: str, benchmark: str) -> int:
    """The image size the model is evaluated at on ``benchmark``: its card's evaluation plan, else its recipe."""
    try:
        from ..models.cards import eval_plan
    except ImportError:
        from .recipes import resolve

        return int(resolve(model, benchmark)["img_size"])
    return int(eval_plan(model, benchmark).img_size)


def protocol_deviations(record: dict, *, original_size_wanted: bool = False) -> list[str]:
    """Why ``record`` is not of the full protocol, in short words (empty: it is).

    The full protocol: every episode of the fold (``full_episode_set``) of the protocol's own draw (no
    ``episode_seed`` other than 0), the model's default image size for the
    benchmark it was trained on (:func:`default_img_size`; the record's ``default_img_size`` when the model is
    unknown to this hmrepro), fp32, and scored at network resolution — or at the original image size when
    ``original_size_wanted``.
    """
    reasons = [_episode_deviation(record), _episode_seed_deviation(record), _precision_deviation(record)]
    reasons.append(_size_deviation(record))
    reasons.append(_original_size_deviation(record, original_size_wanted))
    return [reason for reason in reasons if reason]


def is_full_protocol(record: dict, *, original_size_wanted: bool = False) -> bool:
    """Whether ``record`` may fill a table cell (:func:`protocol_deviations` finds nothing)."""
    return not protocol_deviations(record, original_size_wanted=original_size_wanted)


def _episode_deviation(record: dict) -> str | None:
    if record.get("full_episode_set") is True:
        return None
    episodes, total = record.get("episodes"), record.get("total_episodes")
    if total is not None:
        return f"{episodes} of {total} episodes"
    if "full_episode_set" in record:
        return f"{episodes} episodes, not the full set"
    return f"{episodes} episodes, full set not recorded"


def _episode_seed_deviation(record: dict) -> str | None:
    """Another draw of the protocol's episodes (``hmrepro eval --episode-seed S``) never fills the protocol's cell."""
    seed = _as_int(record.get("episode_seed"))
    return None if not seed else f"episode seed {seed}"


def _precision_deviation(record: dict) -> str | None:
    precision = precision_of(record)
    return None if precision == FULL_PRECISION else precision


def _size_deviation(record: dict) -> str | None:
    wanted = _default_img_size_of(record)
    size = record.get("img_size")
    if wanted is None:
        return f"img {size}, default size unknown"
    return None if _as_int(size) == wanted else f"img {size} ≠ {wanted}"


def _original_size_deviation(record: dict, wanted: bool) -> str | None:
    original = bool(record.get("original_size"))
    if original == wanted:
        return None
    return "original size" if original else "not original size"


def _default_img_size_of(record: dict) -> int | None:
    """The model's default size for the benchmark ``record`` was trained on (the record's own when unknown)."""
    benchmark = record.get("benchmark")
    if record.get("kind") == "domain-shift":
        benchmark = record.get("trained_on") or DOMAIN_SHIFT_TRAINED_ON
    size = _looked_up_img_size(str(record.get("model")), str(benchmark))
    return size if size is not None else _as_int(record.get("default_img_size"))


@cache
def _looked_up_img_size(model: str, benchmark: str) -> int | None:
    try:
        return default_img_size(model, benchmark)
    except (HmreproError, KeyError, ValueError):  # a model or benchmark this hmrepro does not know
        return None


def _as_int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
