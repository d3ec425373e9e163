"""Model diagnosis: probes that measure what is wrong inside a trained candidate, and their verification."""
