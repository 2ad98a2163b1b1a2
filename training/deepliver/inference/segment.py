"""``deepliver segment``: the cascade on one volume or a folder of volumes, written in the input's geometry.

INPUT is a DICOM series folder, a NIfTI / NRRD / MetaImage file, or a folder of such inputs (files, DICOM
series folders, or case folders holding ``image.nii.gz`` / ``image/`` as ``deepliver phantom`` writes them).
OUTPUT is a file whose extension picks the format (``.nii.gz``, ``.nii``, ``.nrrd``, ``.seg.nrrd``,
``.mha``), or a folder with ``output_format="dicom-seg"`` (a DICOM SEG file referencing the source series);
for a folder of inputs OUTPUT is a folder and each case is written as ``<case>.<ext>``. Beside each label a
sidecar ``<name>.json`` records models, post-processing parameters, volumes and timings.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from deepliver.atomic import write_json_atomic
from deepliver.errors import ConfigError, InputError, ReadError
from deepliver.imaging.volumes import VOLUME_EXTENSIONS, read_volume, volume_extension, write_label
from deepliver.inference.runtime import RuntimeChoice, choose_runtime
from deepliver.postprocess import PostprocessOptions
from deepliver.progress import ProgressCallback

__all__ = ["SegmentOptions", "SegmentOutcome", "parse_shard", "find_inputs", "segment", "sidecar_path",
           "segment_runtime"]

OUTPUT_FORMATS = ("nii.gz", "nii", "nrrd", "seg.nrrd", "mha", "dicom-seg")


@dataclass
class SegmentOptions:
    """Options of ``segment``. ``device``: auto (CUDA when torch sees one), cpu or cuda. ``runtime``: auto,
    torch or onnx (``deepliver.inference.runtime.choose_runtime``), or a ``RuntimeChoice`` already made.
    ``threads``: CPU threads of the runtime (None: its default). ``on_runtime(choice)`` is called once the
    inputs are checked and the models loaded (the CLI prints the choice). ``output_format``: None = from
    OUTPUT's extension (a single input) or ``nii.gz`` (a folder of inputs)."""

    device: str = "auto"
    runtime: Union[str, RuntimeChoice] = "auto"
    threads: Optional[int] = None
    on_runtime: Optional[Callable[[RuntimeChoice], None]] = None
    output_format: Optional[str] = None
    shard: tuple[int, int] = (0, 1)
    series: Optional[str] = None
    postprocess: PostprocessOptions = field(default_factory=PostprocessOptions)


@dataclass
class SegmentOutcome:
    case: str
    input: Path
    output: Path
    info: dict[str, Any]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; ConfigError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match or int(match.group(2)) < 1 or int(match.group(1)) >= int(match.group(2)):
        raise ConfigError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def _is_dicom_folder(folder: Path) -> bool:
    return any(p.is_file() and p.name != "DICOMDIR" and _is_dicom_file(p) for p in sorted(folder.iterdir())[:50])


def find_inputs(input_path: Path) -> tuple[bool, list[tuple[str, Path]]]:
    """``(is_batch, [(case name, input path), ...])`` for INPUT, sorted by case name."""
    if not input_path.exists():
        raise ReadError("no such file or folder", input_path)
    if input_path.is_file() or _is_dicom_folder(input_path):
        return False, [(_case_name(input_path), input_path)]
    cases = []
    for child in sorted(input_path.iterdir()):
        if child.is_file() and volume_extension(child):
            cases.append((_case_name(child), child))
        elif child.is_dir():
            inner = [child / f"image{ext}" for ext in VOLUME_EXTENSIONS] + [child / "image"]
            found = next((p for p in inner if p.exists()), None)
            if found is not None:
                cases.append((child.name, found))
            elif _is_dicom_folder(child):
                cases.append((child.name, child))
    if not cases:
        raise ReadError("no volume found: expected a DICOM series folder, a volume file (.nii.gz, .nrrd, "
                        ".mha) or a folder of those", input_path)
    return True, cases


def _case_name(path: Path) -> str:
    ext = volume_extension(path)
    return path.name[: -len(ext)] if ext else path.name


def _output_format(output: Path, options: SegmentOptions, batch: bool) -> str:
    if options.output_format:
        if options.output_format not in OUTPUT_FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, got {options.output_format!r}")
        return options.output_format
    if batch:
        return "nii.gz"
    ext = volume_extension(output)
    if ext is None:
        raise ConfigError(f"unknown output extension; use one of {', '.join(VOLUME_EXTENSIONS)} or "
                          "--format dicom-seg with a folder", output)
    return ext.lstrip(".")


def sidecar_path(output: Path) -> Path:
    """``out.nii.gz`` -> ``out.json``; a DICOM SEG folder -> ``folder/segmentation.json``."""
    if output.is_dir():
        return output / "segmentation.json"
    ext = volume_extension(output)
    return output.with_name((output.name[: -len(ext)] if ext else output.name) + ".json")


def segment_runtime(liver_bundle: str | os.PathLike, tumor_bundle: str | os.PathLike | None = None,
                    options: Optional[SegmentOptions] = None) -> RuntimeChoice:
    """The runtime and device ``segment`` uses for these bundles with ``options`` (see ``choose_runtime``)."""
    from deepliver.models.bundle import read_bundle_config

    options = options or SegmentOptions()
    if isinstance(options.runtime, RuntimeChoice):
        return options.runtime
    bundles = [(Path(b), read_bundle_config(b)) for b in (liver_bundle, tumor_bundle) if b is not None]
    return choose_runtime(options.runtime, options.device, bundles)


def _load_models(liver_bundle, tumor_bundle, choice: RuntimeChoice, threads: Optional[int]):
    from deepliver.inference.predict import load_model

    if threads and choice.runtime == "torch":
        import torch
        torch.set_num_threads(int(threads))
    kwargs = dict(device=choice.device, runtime=choice.runtime, threads=int(threads or 0))
    liver = load_model(liver_bundle, **kwargs)
    return liver, (load_model(tumor_bundle, **kwargs) if tumor_bundle else None)


def _write(result, input_path: Path, output: Path, fmt: str, image, series: Optional[str]) -> Path:
    if fmt == "dicom-seg":
        from deepliver.imaging import list_series
        from deepliver.imaging.dicom_seg import write_dicom_seg
        if not input_path.is_dir():
            raise ConfigError("--format dicom-seg needs a DICOM series as input", input_path)
        infos = list_series(input_path)
        info = next((s for s in infos if series in (None, s.series_uid)), None)
        output.mkdir(parents=True, exist_ok=True)
        write_dicom_seg(result.label, info.files, output / "segmentation.dcm")
        return output
    write_label(result.label, output, image)
    return output


def segment(input_path: str | os.PathLike, output: str | os.PathLike, liver_bundle: str | os.PathLike,
            tumor_bundle: str | os.PathLike | None = None, options: Optional[SegmentOptions] = None,
            progress: Optional[ProgressCallback] = None) -> list[SegmentOutcome]:
    """Segment INPUT into OUTPUT (see the module docstring); returns one outcome per case written.

    Bundles are checked first (wrong task, newer deepliver: ``BundleError``), then each case is read,
    segmented and written atomically with its sidecar JSON. A case without any liver gets an all-zero label
    and ``info["liver_found"] = False``.
    """
    from deepliver.inference.cascade import segment_image
    from deepliver.models.bundle import check_task, read_bundle_config

    options = options or SegmentOptions()
    input_path, output = Path(input_path), Path(output)
    check_task(read_bundle_config(liver_bundle), "liver", liver_bundle)
    if tumor_bundle is not None:
        check_task(read_bundle_config(tumor_bundle), "tumor", tumor_bundle)
    batch, cases = find_inputs(input_path)
    fmt = _output_format(output, options, batch)
    index, count = options.shard
    cases = cases[index::count]
    choice = segment_runtime(liver_bundle, tumor_bundle, options)
    liver_model, tumor_model = _load_models(liver_bundle, tumor_bundle, choice, options.threads)
    if options.on_runtime:
        options.on_runtime(choice)

    outcomes = []
    for number, (case, path) in enumerate(cases):
        if progress:
            progress("read", number, len(cases))
        image = read_volume(path, series=options.series)
        result = segment_image(image, liver_model, tumor_model, options.postprocess, progress)
        target = (output / (case if fmt == "dicom-seg" else f"{case}.{fmt}")) if batch else output
        written = _write(result, path, target, fmt, image, options.series)
        result.info.update({"case": case, "input": str(path), "output": str(written), "device": choice.device,
                            "runtime": choice.runtime, "runtime_reason": choice.reason})
        write_json_atomic(sidecar_path(written), result.info)
        outcomes.append(SegmentOutcome(case, path, written, result.info))
        if progress:
            progress("write", number + 1, len(cases))
    if not outcomes and batch:
        raise InputError(f"shard {index}/{count} holds no case (there are fewer cases than shards)", input_path)
    return outcomes
