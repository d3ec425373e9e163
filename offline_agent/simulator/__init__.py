"""A user simulator: personas from real histories critique a candidate's top-10 lists in words."""
