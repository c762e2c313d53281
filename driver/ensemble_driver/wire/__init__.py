"""The conversation with i-PI (or any i-PI protocol server): the bytes on the socket
(``protocol``), the one boundary between atomic units and DeePMD's (``units``), the
socket itself (``transport``), the client's state machine (``session``) and the
structure the server will send (``template``). Nothing here knows about ranks or
ensembles."""
