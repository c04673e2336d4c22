"""Compiled property filters, one module per family of operators.

Bottom up, each importing only modules before it: ``base`` (the ``_Filter`` protocol, the
operator names, what a filter may read of an evaluation), ``values`` (property values as text,
number or bool), ``regex_cost`` (the regex backtracking cost analysis), ``regex`` (regex
translation and guarded search), ``text`` (equality, text and regex filters), ``numeric``
(numeric and semver filters), ``dates`` (date filters), ``cohorts`` (cohort membership and flag
dependencies). ``phactor.flags.compiled.compile_filter`` picks the class for a filter
definition. Pure code: no threads, no I/O, nothing from phactor outside the flag core.
"""
