"""The IPython adapter: the shell made safe for concurrent subshells
(``shell``), the shell request handlers (``handlers``), ``input()`` over
stdin (``stdin``) and comms (``comms``)."""
