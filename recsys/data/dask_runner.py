"""Beam's DaskRunner with its ParDo translation fixed: every bundle collects its outputs afresh.

The defect, in apache-beam 2.77 (``apache_beam/runners/dask/transform_evaluator.py``): the ParDo
translation creates one output receiver per transform while the Dask graph is built, and
``apply_dofn_to_bundle`` returns everything that receiver has collected so far, never only the
bundle's own outputs. A copy of the graph that runs one ParDo twice therefore emits the earlier
bundle's outputs again. That happens whenever a worker process holds one deserialized copy for two
bundles (two partitions of a transform in one worker, or a side input, which computes its
collection's whole lineage again inside the consuming task, on objects the main graph already ran):
a global sum read as a side input by the sum's own input comes out doubled, and the prepare
pipeline's global item counts come out too large. No pipeline can avoid it, since every side
input and every multi-partition ParDo is exposed, so the runner's translation is overridden
instead: :class:`DaskRunner` registers :class:`FreshReceiverParDo` for ``beam.ParDo`` while it
translates a pipeline, and each bundle builds its own receivers and output handler.

``tests/recsys/data/test_distributed_runner.py`` keeps a strict expected-failure test of Beam's own
runner, so this module can go once an upgrade fixes the defect upstream.
"""

from __future__ import annotations

import threading
from typing import Any

import apache_beam as beam
import dask.bag as db
from apache_beam.runners.common import DoFnContext, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import dask_runner, transform_evaluator
from apache_beam.transforms.window import WindowFn

_TRANSLATING = threading.Lock()  # the translation table is Beam's, shared by every DaskRunner in the process


class FreshReceiverParDo(transform_evaluator.ParDo):  # type: ignore[misc]
    """Beam's ParDo translation, with the output receivers and handler made per bundle."""

    def apply(self, input_bag: db.Bag, side_inputs: Any = None) -> db.Bag:
        transform = self.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(self.applied.main_inputs.values()))
        window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
        invoker = {"side_inputs": side_inputs, "input_args": list(args), "input_kwargs": kwargs}
        windowed = input_bag.map(transform_evaluator.get_windowed_value, window_fn)  # type: ignore[no-untyped-call]
        bundles: db.Bag = windowed.map_partitions(
            run_bundle, DoFnSignature(transform.fn), window_fn, transform.label, invoker
        )
        return bundles


def run_bundle(
    items: list[Any], signature: DoFnSignature, window_fn: WindowFn | None, label: str, invoker: dict[str, Any]
) -> list[Any]:
    """One partition through the DoFn, with receivers that hold this bundle's outputs only."""
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
    context = {
        "context": DoFnContext(label, state=None),
        "user_state_context": None,
        "bundle_finalizer_param": beam.DoFn.BundleFinalizerParam(),
    }
    result: list[Any] = transform_evaluator.apply_dofn_to_bundle(
        items, [signature, handler], {**invoker, **context}, receivers
    )
    return result


class DaskRunner(dask_runner.DaskRunner):  # type: ignore[misc]
    """Beam's DaskRunner, translating ParDos with :class:`FreshReceiverParDo`."""

    def run_pipeline(self, pipeline: beam.Pipeline, options: Any) -> Any:
        table = transform_evaluator.TRANSLATIONS
        with _TRANSLATING:  # the graph is built here; the workers only run it
            upstream = table[beam.ParDo]
            table[beam.ParDo] = FreshReceiverParDo
            try:
                return super().run_pipeline(pipeline, options)
            finally:
                table[beam.ParDo] = upstream
