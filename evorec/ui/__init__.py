"""The review console (``evorec ui``): evolution runs, the experiment queue, A/B reports, and a
reviewer's approvals, rejections and rollbacks, each recorded in the registry's audit log."""
