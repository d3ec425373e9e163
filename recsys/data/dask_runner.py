"""Beam's DaskRunner with its ParDo translation fixed, so that a pipeline gives the same outputs as on FnApiRunner.

Three defects of apache-beam 2.77's translation (``apache_beam/runners/dask/transform_evaluator.py``):

- Outputs of earlier bundles come out again. The translation makes one output receiver per transform
  while the Dask graph is built, and each bundle returns everything that receiver has collected so far.
  A worker process that runs one ParDo twice on the same deserialized copy of the graph (two partitions
  in one worker; a side input computed again inside the consuming task) emits the earlier bundle's
  outputs again: a global sum read as a side input by the sum's own input comes out doubled, and the
  prepare pipeline's global item counts came out too large.
- Side inputs are computed inside each task that reads them, by a nested compute of their whole
  lineage submitted to the same scheduler: the lineage runs again for every such task, and its keys
  collide with the main graph's optimized ones (the scheduler warns of keys submitted twice with
  different tasks, which "can cause failures and deadlocks").
- What a DoFn emits from ``finish_bundle`` is lost: the bundle's outputs are collected before it runs.

Beam's runner also leaves its ``distributed.Client`` open after the pipeline ends: when the cluster
then shuts down, the client keeps trying to reconnect and prints a ``CancelledError`` traceback.
:class:`ClosingResult` closes it once the pipeline has finished.

No pipeline can avoid them (every multi-partition ParDo and every side input is exposed), so while
:class:`DaskRunner` translates a pipeline it registers :class:`BundleParDo` for ``beam.ParDo`` in
Beam's translation table: each bundle builds its own receivers and returns their contents after
``finish_bundle``, and each side input is one value of the graph (its elements gathered once),
passed to every bundle that reads it.

``tests/recsys/data/test_distributed_runner.py`` keeps strict expected-failure tests of Beam's own
runner, so this module can go once an upgrade fixes the defects upstream.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import dask.bag as db
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import dask_runner, transform_evaluator
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import WindowFn
from dask.delayed import delayed

_TRANSLATING = threading.Lock()  # the translation table is Beam's, shared by every DaskRunner in the process


class BundleParDo(transform_evaluator.ParDo):  # type: ignore[misc]
    """Beam's ParDo translation with fresh receivers per bundle and side inputs as graph dependencies."""

    def apply(self, input_bag: db.Bag, side_inputs: list[SideInputMap] | None = None) -> db.Bag:
        transform = self.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(self.applied.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        views = [(side._view_class, side._view_options, side._iterable.window_fn) for side in side_inputs or []]
        # each side input gathered once, as a graph value left unoptimized (passed as an optimized bag reduction,
        # one of two flattened inputs went missing)
        values = [delayed(_concat)(side._iterable.bag.to_delayed(optimize_graph=False)) for side in side_inputs or []]
        windowed = input_bag.map(transform_evaluator.get_windowed_value, window_fn)  # type: ignore[no-untyped-call]
        bundles: db.Bag = windowed.map_partitions(
            run_bundle, DoFnSignature(transform.fn), window_fn, transform.label, (list(args), kwargs), views, *values
        )
        return bundles


def _concat(parts: Iterable[list[Any]]) -> list[Any]:
    return [element for part in parts for element in part]


def run_bundle(
    items: list[Any],
    signature: DoFnSignature,
    window_fn: WindowFn | None,
    label: str,
    arguments: tuple[list[Any], dict[str, Any]],
    views: list[tuple[Any, dict[str, Any], Any]],
    *side_values: list[Any],
) -> list[Any]:
    """One partition through the DoFn, with receivers that hold this bundle's outputs only, those of
    ``finish_bundle`` included."""
    receivers = transform_evaluator.OneReceiver()
    handler = _OutputHandler(
        window_fn=window_fn,
        main_receivers=receivers[None],
        tagged_receivers=receivers,
        per_element_output_counter=None,
        output_batch_converter=None,
        process_yields_batches=False,
        process_batch_yields_elements=False,
    )
    side_inputs = [
        SideInputMap(view, options, [transform_evaluator.get_windowed_value(v, mapping) for v in elements])
        for (view, options, mapping), elements in zip(views, side_values, strict=True)
    ]
    invoker = {
        "context": DoFnContext(label, state=None),
        "side_inputs": side_inputs,
        "input_args": arguments[0],
        "input_kwargs": arguments[1],
        "user_state_context": None,
        "bundle_finalizer_param": beam.DoFn.BundleFinalizerParam(),
    }
    dofn = DoFnInvoker.create_invoker(signature, handler, **invoker)
    dofn.invoke_setup()
    dofn.invoke_start_bundle()
    for item in items:
        dofn.invoke_process(item)
    dofn.invoke_finish_bundle()  # Beam's translation collects the outputs before this, losing finish_bundle's
    dofn.invoke_teardown()
    return [output.value for output in receivers.values]


class ClosingResult(dask_runner.DaskRunnerResult):  # type: ignore[misc]
    """Beam's result, closing its client once the pipeline is done or failed (not on a mere timeout)."""

    def wait_until_finish(self, duration: float | None = None) -> str:
        try:
            return str(super().wait_until_finish(duration))
        finally:
            if self.state in (PipelineState.DONE, PipelineState.FAILED):
                self.client.close()


class DaskRunner(dask_runner.DaskRunner):  # type: ignore[misc]
    """Beam's DaskRunner, translating ParDos with :class:`BundleParDo`; its result closes the client."""

    def run_pipeline(self, pipeline: beam.Pipeline, options: Any) -> Any:
        table = transform_evaluator.TRANSLATIONS
        with _TRANSLATING:  # the graph is built here; the workers only run it
            upstream = table[beam.ParDo]
            table[beam.ParDo] = BundleParDo
            try:
                result = super().run_pipeline(pipeline, options)
            finally:
                table[beam.ParDo] = upstream
        return ClosingResult(result.client, result.futures)
