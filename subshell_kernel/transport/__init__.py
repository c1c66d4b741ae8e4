"""The transport: zmq sockets and the threads that own or read them (shell
router, control, iopub, heartbeat), and ``Channels``, through which the
layers above send."""
