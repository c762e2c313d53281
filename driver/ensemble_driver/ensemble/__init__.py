"""The ranks at work in ``run``: which rank holds which model (``layout``), the messages
between them (``messages``), rank 0's leader (``leader``) with its deviation jobs
(``jobs``), steps and beads (``steps``), rows (``rows``), several connections
(``connections``), the batch replicas (``replicas``), the followers (``followers``), the
end of a run (``ending``), and the extras it sends
back (``extras``)."""
