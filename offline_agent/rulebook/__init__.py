"""The offline proposer: a catalogue of known recommender improvements as code transforms."""
