"""The candidate's own diagnosis probes; none yet."""

PROBES = []
