"""The RPC run-once table, ``mirror.rpc_calls``: billing-sync serves portal-web's calls.

A Python migration so the table comes from the shared library's one definition
(``billfold.rpc.rpc_calls_ddl``), as the outbox does in ``mirror_0002_billing``.
"""

from yoyo import step

from billfold.rpc import rpc_calls_ddl

__depends__ = {"mirror_0002_billing"}

steps = [step(rpc_calls_ddl("mirror"))]
