"""Rank 0's files, shared by ``run`` and ``devi``: the deviation files byte for byte as
LAMMPS writes them (``model_devi``), the LAMMPS dumps laid out for DP-GEN and dpgen2
(``dumps``), and the trust levels, candidate files and summary (``selection``). They
import only the deviation maths and the errors."""
