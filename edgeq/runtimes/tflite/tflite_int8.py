"""tflite-int8: INT8 weights and activations; int8 model I/O, or float32 I/O with ``--tflite-io float``.

PyTorch sources: litert-torch's PT2E quantizer. Keras / SavedModel sources: TFLiteConverter. ONNX sources: a chain of
routes (``ONNX_ROUTES``, measured on real models in docs/onnx-to-tflite.md), each handing over to the next when it
fails; the manifest recipe names the route used and why the earlier ones failed."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field

from edgeq.backend_config import FallbackConfig
from edgeq.errors import BackendError, UnsupportedConversion, failure_reason
from edgeq.metrics import mixed_range_note
from edgeq.runtimes._picking import (
    SCORE_SAMPLES,
    ChildScorer,
    Score,
    best,
    describe,
    floor_applies,
    trial_split,
)
from edgeq.runtimes.adapter import with_option
from edgeq.runtimes.base import Backend, ExportedFiles
from edgeq.runtimes.tflite._tflite import NARROW_CONV_CHANNELS, NARROW_CONV_MIN_MACS, convert_int8

ONNX_ROUTES = ("onnx2tf", "litert-torch")
"""Route order for ONNX sources: onnx2tf (isolated tool environment) first — it exported and verified the most real
ONNX models at the best fidelity (docs/onnx-to-tflite.md) — then onnx2fx → litert-torch PT2E. ``EDGEQ_TFLITE_ROUTES``
(comma-separated) replaces the order; ``-O tflite-int8.route=`` (``--tflite-route``) pins one route
(accuracy control rebuilds through the route that worked)."""


def onnx_routes() -> list[str]:
    """The route order in force: ``EDGEQ_TFLITE_ROUTES`` or ``ONNX_ROUTES``; unknown names are refused."""
    named = [r.strip() for r in os.environ.get("EDGEQ_TFLITE_ROUTES", "").split(",") if r.strip()]
    unknown = sorted(set(named) - set(ONNX_ROUTES))
    if unknown:
        raise BackendError(f"EDGEQ_TFLITE_ROUTES: unknown route(s) {', '.join(unknown)}; known: {', '.join(ONNX_ROUTES)}")
    return named or list(ONNX_ROUTES)


ROUTE_TARGET = 0.99
"""Worst-sample cosine (every output, calibration samples) at which the first route that converts is kept without
building the next: below it the next routes are built and scored too. MiniLM-L6 as ONNX: onnx2tf 0.36 held out,
onnx2fx → litert-torch 0.91 (docs/zoo.md)."""


def kept_route(files: ExportedFiles) -> str:
    """The route name of an ONNX-source artifact (its recipe's ``route``, as ``ONNX_ROUTES`` spells it)."""
    return "onnx2tf" if "onnx2tf" in str(files.recipe.get("route", "onnx2tf")) else "litert-torch"


def _empty(folder: Path, remove: bool) -> None:
    """Delete the files a route wrote into ``folder``, and the folder itself when ``remove``."""
    if remove:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for leftover in folder.iterdir():
        if leftover.is_file():
            leftover.unlink()
        else:
            shutil.rmtree(leftover, ignore_errors=True)


class TfliteInt8Config(FallbackConfig):
    """tflite-int8 options (model I/O and narrow convolutions are the shared --tflite-io / --tflite-narrow-convs)."""

    route: Literal["onnx2tf", "litert-torch"] | None = Field(
        None, description="ONNX sources: pin one route; default the chain of ONNX_ROUTES. --tflite-route")
    exclude_modules: list[str] = Field([], description="litert-torch routes: PT2E module paths left float "
                                                       "(accuracy control adds to them)")
    float_nodes: list[str] = Field([], description="onnx2tf route: TFLite tensors the converter leaves float "
                                                   "(accuracy control adds to them)")
    fidelity_floor: float = Field(0.99, ge=0.0, le=1.0, description=(
        "litert-torch routes: worst-sample cosine below which the modules around the costliest activations stay "
        "float; 0 = off (also the Keras sources' recipe search)"))


class TfliteInt8(Backend):
    name = "tflite-int8"
    runtime = "tflite"
    precision = "int8"
    requires = ("litert_torch", "torch", "torchao")
    pip_extra = "tflite"
    needs_calibration = True
    Config = TfliteInt8Config

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        if options.calib_method != "minmax":
            raise BackendError(f"calibration method {options.calib_method!r} is not supported by tflite-int8 "
                               "(litert-torch's PT2E quantizer observes min/max)")
        self.require_calibration(calib)
        if source.framework == "keras":  # TFLiteConverter full integer; --tflite-io picks int8 or float I/O
            from edgeq.runtimes.tflite import _tflite_keras

            main = _tflite_keras.convert(source, out_dir / "model.tflite", "int8", calib, options.tflite_io)
            recipe = _tflite_keras.recipe(source, "int8", options.tflite_io)
            notes = [f"{_tflite_keras.NOTES['int8']}; {options.tflite_io} model I/O"]
            floor_on = bool(self.config_of(options).fidelity_floor)  # 0 turns the Keras recipe search off too
            try:
                search = _tflite_keras.search_int8(source, calib, main, options.tflite_io) if floor_on else None
            except Exception as exc:  # noqa: BLE001 - the search only improves; the plain artifact stays
                for leftover in out_dir.glob("candidate-*.tflite"):
                    leftover.unlink()
                search = None
                notes.append(f"recipe search failed ({failure_reason(exc, 160)}); full-integer model kept")
            if search is not None:
                recipe["recipe_search"] = search
                floated = search["chosen_float_tensors"]
                recipe["float_tensor_count"] = len(floated)
                notes.append(f"{len(floated)} op output(s) float: worst cosine {search['tried'][0]['worst_cosine']} -> "
                             f"{search['chosen_worst_cosine']} on calibration samples (recipe search)" if floated else
                             f"recipe search: no float group gained on calibration samples ({search['tried']})")
            return ExportedFiles(main=main, recipe=recipe, notes=notes)
        if options.qat is not None:  # quantization-aware training (edgeq/qat.py), then the same lowering
            from edgeq.runtimes.tflite.adapter import ADAPTER

            return ADAPTER.export_qat(self.name, source, calib, out_dir, options)
        if source.framework == "onnx":
            return self._onnx_chain(source, calib, out_dir, options)
        return self._litert(source, calib, out_dir, options)

    def _onnx_chain(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        """Try each ONNX route in order; the first that converts is kept if it reaches ``ROUTE_TARGET`` on the
        calibration samples, else the next routes are built too and the closest to FP32 is kept (``_picking.best``:
        the earlier route unless a later one cuts its error by a quarter). Failed routes' reasons and every route's
        score go into the recipe; a pinned route (``-O tflite-int8.route=``) is built alone, and so is the first that
        converts a model with mixed-range outputs (``SourceModel.mixed_range_outputs``: only onnx2tf keeps them
        float, and a whole-output cosine does not see their zeroed class scores)."""
        pinned = self.config_of(options).route
        routes = [str(pinned)] if pinned else onnx_routes()
        failed: dict[str, str] = {}
        scores: dict[str, Score] = {}
        kept: ExportedFiles | None = None
        scorer = ChildScorer(source, itertools.islice(iter(calib), SCORE_SAMPLES))
        # litert-torch does not keep mixed-range outputs float: its whole-output cosine would hide zeroed class scores
        compare = len(routes) > 1 and not source.mixed_range_outputs(calib)
        for route in routes:
            build = out_dir if kept is None else Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".tflite-route-"))
            # an alternative route is built plain: its fidelity floor (up to four more conversions) made PP-OCRv6-tiny
            # recognition's tflite-int8 export take 998 s, and the comparison is between the routes' own recipes
            route_options = options if kept is None else with_option(options, self.name, fidelity_floor=0.0)
            try:
                files = self._onnx2tf(source, calib, build, route_options) if route == "onnx2tf" \
                    else self._litert(source, calib, build, route_options)
                if compare:
                    scores[route] = scorer(files.main)
            except Exception as exc:  # noqa: BLE001 - any failure of one route hands over to the next
                failed[route] = failure_reason(exc, 300)
                _empty(build, remove=build != out_dir)
                continue
            if kept is None:
                kept = files
            elif best({kept_route(kept): scores[kept_route(kept)], route: scores[route]}) == route:
                _empty(out_dir, remove=False)
                for item in build.iterdir():
                    item.rename(out_dir / item.name)
                files.main = out_dir / files.main.name
                kept = files
            if build != out_dir:
                shutil.rmtree(build, ignore_errors=True)
            if not compare or max(worst for worst, _ in scores.values()) >= ROUTE_TARGET:
                break
        if kept is None:
            raise UnsupportedConversion("no ONNX→TFLite route converts this model: "
                                        + "; ".join(f"{r}: {e}" for r, e in failed.items()))
        if failed:
            kept.recipe["routes_failed"] = failed
            kept.notes.append("other route(s) failed: " + "; ".join(f"{r}: {e}" for r, e in failed.items()))
        if len(scores) > 1:
            kept.recipe["route_scores"] = {route: list(score) for route, score in scores.items()}
            kept.notes.append(f"route closest to FP32 on {len(scorer.samples)} calibration samples (worst/mean cosine): "
                              + describe(scores))
        return kept

    def _onnx2tf(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        from edgeq.runtimes.tflite import _tflite_onnx2tf

        float_nodes = list(self.config_of(options).float_nodes)
        mixed = source.mixed_range_outputs(calib)
        recipe = _tflite_onnx2tf.convert(source, calib, out_dir / "model.tflite", "int8", options.tflite_io,
                                         float_nodes, float_outputs=bool(mixed))
        note = "int8 weights and activations (onnx2tf → TFLiteConverter), " + (
            "float32 model I/O" if recipe.get("io") == "float" else "int8 model I/O")
        if mixed:
            note += "; output op(s) float and float I/O: " + mixed_range_note(mixed)
        if float_nodes:
            note += f"; {len(float_nodes)} tensor(s) left in float"
        elif recipe.get("float_tensor_count"):
            note += f"; {recipe['float_tensor_count']} op output(s) float in all ({recipe['picked_by']})"
        return ExportedFiles(main=out_dir / "model.tflite", recipe=recipe, notes=[note])

    def _litert(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        """litert-torch PT2E (PyTorch sources, and ONNX sources converted by onnx2fx)."""
        excluded = list(self.config_of(options).exclude_modules)
        float_io = options.tflite_io == "float"
        narrow_float = options.tflite_narrow_convs == "float"
        main, per_channel = convert_int8(source, calib, out_dir / "model.tflite", self.name, exclude_modules=excluded,
                                         narrow_convs_float=narrow_float, float_io=float_io)
        floor = self.config_of(options).fidelity_floor
        floor_note = self._floor(source, calib, main, narrow_float, float_io, floor) if floor and not excluded else ""
        route = "onnx2fx → litert-torch PT2E" if source.framework == "onnx" else "litert-torch PT2E"
        recipe = {"route": route, "export": "strict", "per_channel": per_channel, "symmetric": True,
                  "io": options.tflite_io, "calibration": "minmax", "layout": source.layout,
                  "narrow_convs": f"float when < {NARROW_CONV_CHANNELS} input channels and >= {NARROW_CONV_MIN_MACS} MACs"
                  if narrow_float else "int8"}
        if excluded:
            recipe["float_modules"] = excluded
        if floor_note:
            recipe["fidelity_floor"] = floor_note
        note = ("int8 weights and activations, float32 model I/O (QUANTIZE / DEQUANTIZE ops at the boundary)" if float_io
                else "int8 weights, activations and I/O")
        if narrow_float:
            note += f"; heavy convolutions over < {NARROW_CONV_CHANNELS} input channels in float (--tflite-narrow-convs)"
        return ExportedFiles(main=main, recipe=recipe, notes=[note] + ([floor_note] if floor_note else []))

    def _floor(self, source, calib, main: Path, narrow_float: bool, float_io: bool, floor: float) -> str:
        """Below ``floor`` worst-sample cosine on the held-back last min(16, N/4) calibration samples: the modules
        around the activations that do the most damage alone (``_tflite_floor``) left float, the worst 1, 2, 4, 8
        converted and scored, and the first reaching ``floor`` (else the best gaining ``FLOOR_MIN_GAIN`` over the
        plain model) converted again on every sample as the artifact. The plain model, the ranking and the
        candidates are calibrated on the other samples, so the held-back ones score them all alike: scored on
        samples they were calibrated on, candidates looked better than they were (MTCNN ONet's box head: 0.986 ->
        0.991 on them, 0.989 -> 0.965 held out). Returns the note for the manifest ("" when the plain model holds)."""
        import torch

        from edgeq.runtimes._picking import FLOOR_MIN_GAIN, RANK_SAMPLES, floor_candidates, ranked_note
        from edgeq.runtimes.tflite._tflite import calibrated_graph, quiet
        from edgeq.runtimes.tflite._tflite_floor import rank_by_damage

        split = trial_split(calib)
        if split is None or not floor_applies(split[1]):
            return ""
        fit, held = split
        scorer = ChildScorer(source, held)
        if scorer(main)[0] >= floor:  # calibrated on these samples too: optimistic, but enough to skip
            return ""
        work = Path(tempfile.mkdtemp(dir=main.parent.parent, prefix=".tflite-floor-"))
        try:
            def convert(name: str, modules: list[str]) -> Path:
                return convert_int8(source, fit, work / name, self.name, exclude_modules=modules,
                                    narrow_convs_float=narrow_float, float_io=float_io)[0]

            try:
                plain = scorer(convert("plain.tflite", []))
                with quiet(), torch.no_grad():
                    graph = calibrated_graph(source, fit, self.name, narrow_convs_float=narrow_float, float_io=True)[0]
                ranking, total = rank_by_damage(source, graph, held[:RANK_SAMPLES], scorer.reference()[:RANK_SAMPLES])
            except Exception as exc:  # noqa: BLE001 - the floor only improves; when it fails the plain model stays
                return f"fidelity floor {floor}: ranking failed ({failure_reason(exc, 160)}); plain model kept"
            helpful = [layers for layers, damage in ranking if damage > 0]

            def build(count: int) -> tuple[Score, list[str]]:
                modules = list(dict.fromkeys(layer for layers in helpful[:count] for layer in layers))
                return scorer(convert(f"floor-{count}.tflite", modules)), modules

            tried, failed = floor_candidates(len(helpful), build, floor, "float")
            reached = ranked_note(len(ranking), total, "activations")
            shown = ", ".join(f"{k} float {score[0]:.4f}/{score[1]:.4f}" for k, (score, _) in tried.items()) + failed
            best_count = max(tried, key=lambda k: tried[k][0], default=None)
            if best_count is None or tried[best_count][0][0] < plain[0] + FLOOR_MIN_GAIN:
                return (f"fidelity floor {floor}: {plain[0]:.4f}/{plain[1]:.4f} held back, no candidate gained "
                        f"({shown}; {reached})")
            score, modules = tried[best_count]
            final = convert_int8(source, calib, work / "final.tflite", self.name, exclude_modules=modules,
                                 narrow_convs_float=narrow_float, float_io=float_io)[0]
            final.replace(main)
            return (f"fidelity floor {floor}: worst/mean cosine {plain[0]:.4f}/{plain[1]:.4f} held back -> "
                    f"{score[0]:.4f}/{score[1]:.4f} with {', '.join(modules)} float (around the activations that "
                    f"alone cost the output most, {reached}; tried: {shown})")
        finally:
            shutil.rmtree(work, ignore_errors=True)
