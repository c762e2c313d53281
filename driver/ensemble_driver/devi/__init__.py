"""``ensemble-driver devi`` and ``plot``: the deviation of existing trajectories
(``command``), reading their frames (``frames``), and plotting deviation files
(``plot``). Never imports the ``ensemble`` wing: it has ranks of its own."""
