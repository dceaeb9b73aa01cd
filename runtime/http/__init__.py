"""HTTP plumbing both servers share (the service and the builtin model).

The one strict JSON body policy (``jsonpolicy``) and serving with limits on heads,
bodies and idle connections (``serving``). Imports nothing else from the runtime.
"""
