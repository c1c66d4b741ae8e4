"""The subshell runtime: one AnyIO loop per subshell (``subshell``), the
registry (``registry``), which request the running code works for
(``context``), and the output each request produces (``streams``)."""
