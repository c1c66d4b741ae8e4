"""The sans-IO core: the wire format (``protocol``), the life of a request
(``lifecycle``) and the replies built from the kernel's state alone
(``kernel_info``).  Nothing here touches a socket, a thread or IPython."""
