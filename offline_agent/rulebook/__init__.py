"""The offline proposer: known recommender improvements as edits of a candidate's syntax tree.

``catalogue`` holds the rules (source, prior, preconditions, edits), ``engine`` checks, ranks and
renders them as SEARCH/REPLACE replies, ``syntax`` finds and edits code by structure and name, and
``templates/`` holds the code the rules add.
"""
