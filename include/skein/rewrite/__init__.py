"""The rule agent's building blocks: find references to the source, turn each into
text edits spliced into the original, so everything else stays byte-identical.

One rule a module (sqlglot's optimizer style): ``retarget_tables``, ``map_columns``,
``expand_stars``; ``references`` resolves, ``edits`` splices, ``jinja`` masks dbt.
"""
