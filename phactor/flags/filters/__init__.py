"""Compiled property filters, one module per family of operators.

``base`` (the ``_Filter`` protocol, the operator names, what a filter may read of an evaluation),
``values`` (property values as text, number or bool), ``text`` (equality, text and regex filters)
with ``regex`` (regex translation and guarded search) and ``regex_cost`` (the backtracking cost
analysis), ``numeric`` (numeric and semver filters), ``dates`` (date filters), ``cohorts``
(cohort membership and flag dependencies). ``phactor.flags.compiled.compile_filter`` picks the
class for a filter definition. Pure code: no threads, no I/O.
"""
