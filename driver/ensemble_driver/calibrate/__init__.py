"""``ensemble-driver calibrate``: the model deviation against labelled data (``command``),
reading the data (``data``), the numbers (``statistics``), the report (``report``), the
figure (``plot``) and the parser (``options``). Evaluates through ``devi``'s machinery."""
