"""A launcher that runs this kernel for Jupyter's remote-kernel gateways.

Enterprise Gateway and gateway_provisioners start a kernel on another host
(over SSH, in a container, on a cluster) by running a *launcher* there: it
chooses the kernel's ports in a range the gateway gives, starts the kernel,
sends the connection info back encrypted, and keeps a communication port open
through which the gateway polls, interrupts and shuts the kernel down.  This
package is that launcher for subshell_kernel (``python -m
subshell_kernel.launcher``, or the ``subshell-kernel-launcher`` script).

It is a process of its own beside the kernel: nothing here is imported by the
kernel.  ``options`` parses the gateways' command lines, ``connection`` makes
the connection info, ``payload`` encrypts and sends it, ``listener`` reads the
communication port's requests, ``supervisor`` runs beside the kernel,
``main`` puts them together, ``kernelspecs`` writes sample kernelspecs.
"""
