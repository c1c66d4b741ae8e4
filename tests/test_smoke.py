from .harness import KernelHarness


def test_execute_prints_and_returns(kernel):
    reply, msgs = kernel.run("print('hi'); 40 + 2")
    assert reply["content"]["status"] == "ok"
    types = [m["msg_type"] for m in msgs]
    assert types[0] == "status" and types[-1] == "status"
    assert "execute_input" in types
    result = [m for m in msgs if m["msg_type"] == "execute_result"][0]
    assert result["content"]["data"]["text/plain"] == "42"
    assert kernel.stdout(reply["parent_header"]["msg_id"]) == "hi\n"


def test_trio_await(trio_kernel):
    reply, msgs = trio_kernel.run("import trio\nawait trio.sleep(0.1)\n'done'")
    assert reply["content"]["status"] == "ok", reply["content"]


def test_the_parent_runs_on_uvloop_unless_configured_off(kernel):
    code = "import asyncio\ntype(asyncio.get_running_loop()).__module__"
    reply, msgs = kernel.run(code)
    [result] = [m for m in msgs if m["msg_type"] == "execute_result"]
    assert "uvloop" in result["content"]["data"]["text/plain"]
    subshell_id = kernel.create_subshell()
    try:  # a child keeps asyncio's loop: a uvloop loop costs ~0.3 MB
        reply, msgs = kernel.run(code, subshell_id=subshell_id)
        [result] = [m for m in msgs if m["msg_type"] == "execute_result"]
        assert result["content"]["data"]["text/plain"] == "'asyncio.unix_events'"
    finally:
        kernel.delete_subshell(subshell_id)
    plain = KernelHarness("subshell-asyncio")
    try:
        reply, msgs = plain.run(code)
        [result] = [m for m in msgs if m["msg_type"] == "execute_result"]
        assert result["content"]["data"]["text/plain"] == "'asyncio.unix_events'"
    finally:
        plain.close()
